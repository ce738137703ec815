/*
 * scheduler.h - which replica serves a shard call.
 *
 * Power of two choices on outstanding work weighted by capacity: sample two
 * live candidates, take the one with the smaller (outstanding + 1) / threads.
 * A slow worker accumulates outstanding calls and so receives fewer new ones.
 * Round-robin is the alternative policy. Candidates in `exclude` (a bit per
 * position in `replicas`) are skipped: they already failed this request.
 */
#ifndef TS_SCHEDULER_H
#define TS_SCHEDULER_H

#include <stdint.h>

#include "membership.h"

typedef enum {
  TS_SCHED_P2C = 0,
  TS_SCHED_ROUND_ROBIN = 1,
} ts_sched_policy;

/* Returns a position in `replicas` (an array of worker indices), or -1 when
 * no live, non-excluded replica exists. Thread-safe. */
int ts_sched_pick(ts_membership *c, const int *replicas, int n,
                  uint64_t exclude, ts_sched_policy policy);

#endif
