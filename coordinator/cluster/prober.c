/*
 * prober.c - the coordinator's heartbeat over its workers. See prober.h.
 */
#include "prober.h"

#include <string.h>

#include "log.h"

#define PROBE_PERIOD_MS 500      /* a round starts this often */
#define PROBE_TIMEOUT_MS 1000
#define PROBE_WAIT_MS 250       /* a round waits this long for answers */
#define PROBE_FAILURES_DOWN 2   /* failed health checks in a row: down */

/* A down worker answers again: hold it back from the scheduler until its
 * shards are in place, then put it back in rotation. 1 when it is back. */
static int bring_back(ts_prober *ctl, int i) {
  ts_membership *c = ctl->cluster;
  ts_worker *w = &c->workers[i];
  ts_err err = {0};
  if (ts_membership_probe(c, i, PROBE_TIMEOUT_MS, &err) != TS_OK) return 0;
  atomic_store(&w->up, 0);
  if (ts_registry_resync_worker(ctl->registry, i, &err) != TS_OK) {
    ts_log_warn("worker %s answers but its shards could not be restored: "
                "%s", w->address, err.msg);
    return 0;
  }
  atomic_store(&w->leaving, 0);
  atomic_store(&w->down_since_ms, 0);
  atomic_store(&w->up, 1);
  ts_log_info("worker %s is back and holds its shards", w->address);
  return 1;
}

/* Acts on worker i's health answer (TS_HEALTH_PENDING: its check is still
 * out, nothing to act on yet). Returns 1 when the worker came back
 * (membership grew). */
static int check_worker(ts_prober *ctl, int i, ts_health health) {
  ts_worker *w = &ctl->cluster->workers[i];
  int back = 0;
  switch (health) {
    case TS_HEALTH_PENDING:
      break;
    case TS_HEALTH_SERVING:
      w->probe_failures = 0;
      if (!atomic_load(&w->up)) back = bring_back(ctl, i);
      break;
    case TS_HEALTH_NOT_SERVING:
      w->probe_failures = 0;
      if (!atomic_exchange(&w->leaving, 1))
        ts_log_info("worker %s is leaving (health NOT_SERVING); moving its "
                    "shards", w->address);
      break;
    case TS_HEALTH_UNREACHABLE:
      if (atomic_load(&w->up) && ++w->probe_failures >= PROBE_FAILURES_DOWN &&
          atomic_exchange(&w->up, 0))
        ts_log_warn("worker %s marked down: no health answer %d times in a "
                    "row", w->address, w->probe_failures);
      break;
  }
  if (!atomic_load(&w->up) && atomic_load(&w->down_since_ms) == 0)
    atomic_store(&w->down_since_ms, ts_now_ms());
  return back;
}

/* Re-places the shards of a leaving worker at once, and of a down one once
 * it has been down for --replace-after-ms. A leaving worker whose shards
 * all moved leaves the rotation. */
static void replace_worker(ts_prober *ctl, int i) {
  ts_worker *w = &ctl->cluster->workers[i];
  int leaving = atomic_load(&w->leaving), up = atomic_load(&w->up);
  int64_t since = atomic_load(&w->down_since_ms);
  if (!leaving && (up || !since || ts_now_ms() - since < ctl->replace_after_ms))
    return;
  int left = 0;
  if (ts_registry_replicas_on(ctl->registry, i) > 0) {
    int moved = ts_registry_move_off_worker(ctl->registry, i, &left);
    if (moved)
      ts_log_info(
          "worker %s (%s): %d shard replica(s) re-placed on other "
          "workers",
          w->address, ts_membership_state_name(ctl->cluster, i), moved);
    if (left && left != ctl->unplaced[i])
      ts_log_warn(
          "worker %s (%s): %d shard replica(s) have no other worker "
          "with room; retrying as workers join",
          w->address, ts_membership_state_name(ctl->cluster, i), left);
    ctl->unplaced[i] = left;
  }
  if (leaving && up && left == 0 && atomic_exchange(&w->up, 0)) {
    atomic_store(&w->down_since_ms, ts_now_ms());
    ts_log_info("worker %s left the rotation; its shards are on other "
                "workers", w->address);
  }
}

/* Runs on libuv's thread pool: blocking probes never stall the loop. The
 * health checks of all workers go out at once; a round waits for their
 * answers at most PROBE_WAIT_MS, so a stalled worker (whose check takes
 * the whole PROBE_TIMEOUT_MS to fail) never delays noticing the others:
 * its failure is counted in the round that sees it. */
static void probe_workers(uv_work_t *req) {
  ts_prober *ctl = req->data;
  ts_membership *c = ctl->cluster;
  ts_health health[TS_MAX_WORKERS];
  int grew = 0;
  int n = ts_membership_check_health_all(c, PROBE_TIMEOUT_MS, PROBE_WAIT_MS,
                                         health);
  for (int i = 0; i < n; i++) grew |= check_worker(ctl, i, health[i]);
  for (int i = 0; i < n; i++) replace_worker(ctl, i);
  if (ts_membership_live_count(c) > 0)
    ts_registry_retry_unavailable(ctl->registry);
  if (grew && ts_registry_rebalance(ctl->registry) > 0)
    ts_log_info("shards rebalanced onto returning workers");
}

static void probe_done(uv_work_t *req, int status) {
  (void)status;
  ((ts_prober *)req->data)->probing = 0;
}

static void on_probe_timer(uv_timer_t *t) {
  ts_prober *ctl = t->data;
  if (ctl->probing) return;
  ctl->probing = 1;
  ctl->work.data = ctl;
  uv_queue_work(ctl->timer.loop, &ctl->work, probe_workers, probe_done);
}

int ts_prober_start(ts_prober *p, uv_loop_t *loop, ts_membership *cluster,
                    ts_registry *registry, long replace_after_ms) {
  memset(p, 0, sizeof *p);
  p->cluster = cluster;
  p->registry = registry;
  p->replace_after_ms = replace_after_ms;
  int rc = uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  if (!rc) rc = uv_timer_start(&p->timer, on_probe_timer, PROBE_PERIOD_MS,
                               PROBE_PERIOD_MS);
  return rc ? TS_EINTERNAL : TS_OK;
}

void ts_prober_stop(ts_prober *p) {
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, NULL);
}

