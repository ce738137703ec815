/*
 * placement.h - where shard replicas go: the decisions of placement and
 * re-placement, made on the workers' states and planned bytes alone (no
 * RPC), so they are unit-tested without sockets (tests/test_placement.c).
 * The registry applies them: it uploads, and swaps placements in.
 *
 * Rules (README "Membership"):
 *  - Rendezvous (highest-random-weight) hashing: each worker's weight for a
 *    shard is a hash of the shard's content id (SHA-256 of its bytes) and
 *    the worker's address, the address it registered with; the ties that
 *    64 bits leave are broken by the address.
 *  - Spread: a model's replicas go to the workers holding the fewest bytes
 *    of that model first (its shards, stages and replicas on distinct
 *    workers while there are enough, as tensor and pipeline plans need,
 *    and its bytes shared evenly), and among those to the highest weight
 *    for the shard. Only the model's own bytes count: another model's,
 *    which another coordinator may not serve, would make them disagree.
 *  - A replica goes only to a placement target (ts_membership_is_target: UP
 *    and not leaving) that holds no other replica of the same shard and has
 *    room for it under its memory limit; a worker without room is skipped,
 *    the next one taken.
 *  - A model is placed slot by slot in plan order (stage, shard, replica):
 *    so its placement is a function of its shards and the live workers
 *    (and their room) alone. Two coordinators that see the same live
 *    workers choose the same workers for every shard, whatever order the
 *    workers joined them in, and their re-placements never fight.
 *  - Emptying a worker (down past its grace, or leaving): each replica on
 *    it moves to the first target by the same order, counting the model's
 *    other replicas; with none, it stays where it is and is counted as
 *    unplaced (the prober retries as workers join).
 *  - Rebalancing (a worker joined or came back): each row moves to where a
 *    fresh placement of the model on the live workers puts it (replicas
 *    already there stay in their slots), so coordinators whose histories
 *    differed (one saw the workers join one by one) end with the same
 *    placement. Down and leaving workers are never rebalanced from: their
 *    re-placement has its own rules.
 *
 * Memory is known per coordinator (its own bookings); two coordinators
 * agree while both see room, which holds unless workers are nearly full.
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

/* The rendezvous weight of the worker at `address` for shard `shard_id`
 * (placement rules above). */
unsigned long long ts_placement_weight(const char *shard_id,
                                       const char *address);

/* The bytes of one model's replicas each worker holds (by index), for
 * the spread rule. */
typedef struct ts_placement_spread {
  unsigned long long bytes[TS_MAX_WORKERS];
} ts_placement_spread;

/* The target for a new replica of `len` bytes of shard `shard_id` whose
 * replicas are row[0..n): not in the row, room under its memory limit,
 * fewest bytes of the model (`spread`; NULL: none counted), highest
 * rendezvous weight. -1 when none. Books nothing. */
int ts_placement_pick(ts_membership *c, const char *shard_id, const int *row,
                      int n, size_t len, const ts_placement_spread *spread);

/* Places `replicas` replicas of a new shard (`shard_id`, `len` bytes) on
 * distinct targets, each chosen by ts_placement_pick, into
 * row[0..replicas), books them and counts them in `spread` (may be NULL).
 * TS_EEXHAUSTED when too few targets have room; then nothing stays booked
 * or counted and row is left undefined. */
int ts_placement_place(ts_membership *c, const char *shard_id, size_t len,
                       int replicas, int *row, ts_placement_spread *spread);

/* Moves a booking of `len` bytes from worker `from` to worker `to`. */
void ts_placement_rebook(ts_membership *c, int from, int to, size_t len);

/* One replica moved: the one in slot `slot` of a row, `from` -> `to`. */
typedef struct ts_placement_move {
  int slot, from, to;
} ts_placement_move;

/* Empties worker `from` of one shard's replicas (`shard_id`, `len` bytes;
 * its row of n replicas): each moves to the target ts_placement_pick
 * chooses with `spread` (the model's bytes, updated per move; may be
 * NULL). Rewrites row in place, rebooks each move, records it in moved[]
 * (room for n) and returns how many moved; adds to *unplaced the replicas
 * it found no target for. */
int ts_placement_move_row(ts_membership *c, int from, const char *shard_id,
                          int *row, int n, size_t len,
                          ts_placement_spread *spread,
                          ts_placement_move *moved, int *unplaced);

/* Rebalances one row of n replicas (`len` bytes each) towards want[0..n),
 * the row a fresh placement gives: a replica on a target that is in want
 * stays; every other replica on a target moves to a worker of want not in
 * the row (down and leaving workers keep theirs). Rewrites row, rebooks,
 * records moves in moved[] (room for n) and returns how many moved. */
int ts_placement_move_row_to(ts_membership *c, int *row, int n,
                             const int *want, size_t len,
                             ts_placement_move *moved);

#endif
