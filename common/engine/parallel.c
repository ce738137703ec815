/*
 * parallel.c - the helper threads and the budget they share (contract and
 * policy in parallel.h).
 *
 * Threads and locks: one mutex `mu` guards the counters, the idle stack and
 * every helper's `region` field; each helper sleeps on its own condition
 * variable, a region's caller waits for its helpers on `done`, and threads
 * waiting for a place in the budget wait on `place`. Tasks run without the
 * mutex; they are handed out by an atomic counter in the region.
 *
 * Invariants (under mu):
 *  - held == threads that entered + helpers reserved, <= budget, except
 *    for a caller that never entered (counted only as a reservation limit);
 *  - a helper is on the idle stack exactly when it is not reserved;
 *  - a region's `pending` counts its helpers that have not finished it; the
 *    region (on its caller's stack) lives until pending is 0.
 */
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct region {
  ts_parallel_fn *fn;
  void *ctx;
  int64_t n_tasks;
  atomic_int_fast64_t next; /* first task not handed out */
  int pending;              /* helpers still working (under mu) */
} region;

typedef struct helper {
  pthread_t thread;
  pthread_cond_t wake;
  region *region; /* set to start it on a region (under mu) */
  int slot;       /* its slot in that region */
  int next;       /* idle stack or team list; -1 ends it */
} helper;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t done;  /* a region's helpers finished */
  pthread_cond_t place; /* a place in the budget was given back */
  int budget;           /* B */
  int held;             /* places held: entered threads + reserved helpers */
  int waiting;          /* threads waiting in ts_parallel_enter */
  int idle;             /* top of the idle stack; -1: empty */
  int n_idle;
  int n_helpers;        /* started */
  helper helpers[TS_PARALLEL_MAX_THREADS - 1];
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .place = PTHREAD_COND_INITIALIZER,
    .budget = 1,
    .idle = -1,
};

/* Whether this thread entered (holds a place) / runs inside a region. */
static _Thread_local bool entered, in_region;

/* Runs tasks of r until none is left. */
static void work(region *r, int slot) {
  bool outer = in_region; /* a nested region's caller stays in its own */
  in_region = true;
  for (;;) {
    int64_t t = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
    if (t >= r->n_tasks) break;
    r->fn(r->ctx, t, slot);
  }
  in_region = outer;
}

static void *helper_main(void *arg) {
  helper *h = arg;
  int self = (int)(h - pool.helpers);
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    while (!h->region) pthread_cond_wait(&h->wake, &pool.mu);
    region *r = h->region;
    pthread_mutex_unlock(&pool.mu);
    work(r, h->slot);
    pthread_mutex_lock(&pool.mu);
    h->region = NULL;
    /* Back on the idle stack and out of the budget before the caller can
     * see its region finished, so its next region may take it again. */
    h->next = pool.idle;
    pool.idle = self;
    pool.n_idle++;
    pool.held--;
    if (pool.waiting) pthread_cond_signal(&pool.place);
    if (--r->pending == 0) pthread_cond_broadcast(&pool.done);
  }
  return NULL;
}

int ts_parallel_set_threads(int threads) {
  if (threads < 1) threads = 1;
  if (threads > TS_PARALLEL_MAX_THREADS) threads = TS_PARALLEL_MAX_THREADS;
  pthread_mutex_lock(&pool.mu);
  while (pool.n_helpers < threads - 1) {
    helper *h = &pool.helpers[pool.n_helpers];
    pthread_cond_init(&h->wake, NULL);
    h->region = NULL;
    if (pthread_create(&h->thread, NULL, helper_main, h) != 0) {
      pthread_cond_destroy(&h->wake);
      break;
    }
    pthread_detach(h->thread);
    h->next = pool.idle;
    pool.idle = pool.n_helpers++;
    pool.n_idle++;
  }
  pool.budget = threads < pool.n_helpers + 1 ? threads : pool.n_helpers + 1;
  int budget = pool.budget;
  pthread_cond_broadcast(&pool.place);
  pthread_mutex_unlock(&pool.mu);
  return budget;
}

int ts_parallel_threads(void) {
  pthread_mutex_lock(&pool.mu);
  int b = pool.budget;
  pthread_mutex_unlock(&pool.mu);
  return b;
}

int ts_parallel_want(int64_t work) {
  int64_t want = work / TS_PARALLEL_GRAIN;
  if (want <= 1) return 1;
  pthread_mutex_lock(&pool.mu);
  int budget = pool.budget;
  pthread_mutex_unlock(&pool.mu);
  return want < budget ? (int)want : budget;
}

void ts_parallel_enter(void) {
  if (entered) return;
  pthread_mutex_lock(&pool.mu);
  pool.waiting++;
  while (pool.held >= pool.budget) pthread_cond_wait(&pool.place, &pool.mu);
  pool.waiting--;
  pool.held++;
  pthread_mutex_unlock(&pool.mu);
  entered = true;
}

void ts_parallel_leave(void) {
  if (!entered) return;
  entered = false;
  pthread_mutex_lock(&pool.mu);
  pool.held--;
  if (pool.waiting) pthread_cond_signal(&pool.place);
  pthread_mutex_unlock(&pool.mu);
}

void ts_parallel_reserve(ts_parallel_team *team, int want) {
  team->size = 1;
  team->first_helper = -1;
  if (want <= 1 || in_region) return;
  pthread_mutex_lock(&pool.mu);
  /* Places free now, less those promised to waiting threads and, for a
   * caller that holds none, its own. */
  int free_places = pool.budget - pool.held - pool.waiting - (entered ? 0 : 1);
  int n = want - 1;
  if (n > free_places) n = free_places;
  if (n > pool.n_idle) n = pool.n_idle;
  for (int i = 0; i < n; i++) {
    int h = pool.idle;
    pool.idle = pool.helpers[h].next;
    pool.helpers[h].next = team->first_helper;
    team->first_helper = h;
  }
  if (n > 0) {
    pool.n_idle -= n;
    pool.held += n;
    team->size += n;
  }
  pthread_mutex_unlock(&pool.mu);
}

void ts_parallel_release(ts_parallel_team *team) {
  if (team->first_helper < 0) return;
  pthread_mutex_lock(&pool.mu);
  for (int h = team->first_helper; h >= 0;) {
    int next = pool.helpers[h].next;
    pool.helpers[h].next = pool.idle;
    pool.idle = h;
    pool.n_idle++;
    pool.held--;
    h = next;
  }
  if (pool.waiting) pthread_cond_broadcast(&pool.place);
  pthread_mutex_unlock(&pool.mu);
  team->first_helper = -1;
  team->size = 1;
}

void ts_parallel_run(ts_parallel_team *team, int64_t n_tasks,
                     ts_parallel_fn *fn, void *ctx) {
  if (n_tasks <= 0) {
    ts_parallel_release(team);
    return;
  }
  region r = {.fn = fn, .ctx = ctx, .n_tasks = n_tasks};
  atomic_init(&r.next, 0);
  if (team->first_helper < 0 || n_tasks == 1) {
    ts_parallel_release(team);
    work(&r, 0);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  int slot = 1;
  for (int h = team->first_helper; h >= 0; h = pool.helpers[h].next) {
    helper *hp = &pool.helpers[h];
    hp->region = &r;
    hp->slot = slot++;
    r.pending++;
    pthread_cond_signal(&hp->wake);
  }
  pthread_mutex_unlock(&pool.mu);
  team->first_helper = -1;
  team->size = 1;
  work(&r, 0);
  pthread_mutex_lock(&pool.mu);
  while (r.pending > 0) pthread_cond_wait(&pool.done, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
}

void ts_parallel_for(int64_t n_tasks, int want, ts_parallel_fn *fn,
                     void *ctx) {
  ts_parallel_team team;
  ts_parallel_reserve(&team, want);
  ts_parallel_run(&team, n_tasks, fn, ctx);
}
