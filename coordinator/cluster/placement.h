/*
 * placement.h - where shard replicas go: the decisions of placement and
 * re-placement, made on the workers' states and planned bytes alone (no
 * RPC), so they are unit-tested without sockets (tests/test_placement.c).
 * The registry applies them: it uploads, and swaps placements in.
 *
 * Rules (README "Membership"):
 *  - A replica goes only to a placement target (ts_membership_is_target: UP
 *    and not leaving) that holds no other replica of the same shard and has
 *    room for it under its memory limit; of those, the one with the fewest
 *    planned bytes (the lowest index on ties).
 *  - Emptying a worker (down past its grace, or leaving): each replica on
 *    it moves to such a target; with none, it stays where it is and is
 *    counted as unplaced (the prober retries as workers join).
 *  - Rebalancing: a replica on a target worker moves only to a worker whose
 *    planned bytes are below the source's minus the replica's, so the
 *    heavier of the two strictly drops (and the sum of squares with it,
 *    which bounds the number of moves). Down and leaving workers are never
 *    rebalanced from: their re-placement has its own rules.
 *
 * Bookings: a worker's memory_planned counts the bytes of the replicas
 * placed on it. Functions that choose workers also book, as stated on
 * each. The caller serializes decisions (the registry's move_mu, or a
 * model load); bookings are atomics, so the scheduler may read them.
 */
#ifndef TS_PLACEMENT_H
#define TS_PLACEMENT_H

#include <stddef.h>

#include "membership.h"

/* How many workers are placement targets now. */
int ts_placement_targets(ts_membership *c);

/* The target for a new replica of `len` bytes of a shard whose replicas
 * are row[0..n): not in the row, room under its memory limit, fewer
 * planned bytes than `below` (~0ull: any), fewest first. -1 when none.
 * Books nothing. */
int ts_placement_pick(ts_membership *c, const int *row, int n, size_t len,
                      unsigned long long below);

/* Places `replicas` replicas of a new shard of `len` bytes on distinct
 * targets, each chosen by ts_placement_pick, into row[0..replicas), and
 * books them. TS_EEXHAUSTED when too few targets have room; then nothing
 * stays booked and row is left undefined. */
int ts_placement_place(ts_membership *c, size_t len, int replicas, int *row);

/* Moves a booking of `len` bytes from worker `from` to worker `to`. */
void ts_placement_rebook(ts_membership *c, int from, int to, size_t len);

/* One replica moved: the one in slot `slot` of a row, `from` -> `to`. */
typedef struct ts_placement_move {
  int slot, from, to;
} ts_placement_move;

/* Re-places the replicas of one shard (`len` bytes; its row of n
 * replicas): every replica on worker `from` when from >= 0 (emptying it),
 * or, when from < 0, each replica whose move lowers the heavier worker
 * (rebalancing). Rewrites row in place, rebooks each move, records it in
 * moved[] (room for n) and returns how many moved; adds to *unplaced the
 * replicas it should have moved but found no target for. */
int ts_placement_move_row(ts_membership *c, int from, int *row, int n,
                          size_t len, ts_placement_move *moved, int *unplaced);

#endif
