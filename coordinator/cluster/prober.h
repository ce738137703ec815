/*
 * prober.h - the coordinator's heartbeat (README "Membership"). Every
 * PROBE_PERIOD_MS a round asks grpc.health.v1 of every worker at once
 * (asynchronous calls, so one stalled worker delays no other), marks a
 * worker down after two unanswered checks in a row and leaving when it
 * answers NOT_SERVING, re-places the shards of leaving workers at once and
 * of workers down past replace_after_ms, gives a returning worker its
 * shards back before it is routed to again, and rebalances onto it.
 *
 * Threads: the timer runs on the caller's libuv loop; a round's blocking
 * work (probes, uploads) runs on libuv's thread pool, one round at a time,
 * so the loop never blocks. Depends on membership.h and registry.h.
 */
#ifndef TS_PROBER_H
#define TS_PROBER_H

#include <uv.h>

#include "membership.h"
#include "registry.h"

typedef struct ts_prober {
  uv_timer_t timer;
  uv_work_t work;
  int probing;                  /* a round is on the thread pool (loop) */
  long replace_after_ms;        /* a down worker's grace before re-placing */
  int unplaced[TS_MAX_WORKERS]; /* last count logged, per worker */
  ts_membership *cluster;
  ts_registry *registry;
} ts_prober;

/* Starts the rounds on `loop`. The prober, cluster and registry must live
 * until the loop has closed the timer (after ts_prober_stop). */
int ts_prober_start(ts_prober *p, uv_loop_t *loop, ts_membership *cluster,
                    ts_registry *registry, long replace_after_ms);
/* Starts no further round and closes the timer; a round already on the
 * thread pool finishes before the loop ends. Call on the loop's thread. */
void ts_prober_stop(ts_prober *p);

#endif
