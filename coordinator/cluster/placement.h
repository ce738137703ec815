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
 *    64 bits leave are broken by the address. A shard's preferred workers
 *    are the eligible ones in falling weight. So two coordinators that see
 *    the same live workers choose the same workers for the same shard,
 *    whatever order the workers joined them in, and their re-placements
 *    never fight: no coordinator needs to know of another.
 *  - A replica goes only to a placement target (ts_membership_is_target: UP
 *    and not leaving) that holds no other replica of the same shard and has
 *    room for it under its memory limit; of those, the one of highest
 *    weight. A worker without room is skipped, the next one taken.
 *  - Emptying a worker (down past its grace, or leaving): each replica on
 *    it moves to such a target; with none, it stays where it is and is
 *    counted as unplaced (the prober retries as workers join).
 *  - Rebalancing: a replica on a target worker moves only to a target of
 *    higher weight (the best one not in the row), the lowest-weight replica
 *    first, so each move raises the row's weights and a row ends as the
 *    top eligible workers of its shard: where a fresh placement would put
 *    it. A worker that returns gets back the replicas that prefer it.
 *    Down and leaving workers are never rebalanced from: their
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

/* The target for a new replica of `len` bytes of shard `shard_id` whose
 * replicas are row[0..n): not in the row, room under its memory limit,
 * highest rendezvous weight. -1 when none. Books nothing. */
int ts_placement_pick(ts_membership *c, const char *shard_id, const int *row,
                      int n, size_t len);

/* Places `replicas` replicas of a new shard (`shard_id`, `len` bytes) on
 * distinct targets, each chosen by ts_placement_pick, into
 * row[0..replicas), and books them. TS_EEXHAUSTED when too few targets
 * have room; then nothing stays booked and row is left undefined. */
int ts_placement_place(ts_membership *c, const char *shard_id, size_t len,
                       int replicas, int *row);

/* Moves a booking of `len` bytes from worker `from` to worker `to`. */
void ts_placement_rebook(ts_membership *c, int from, int to, size_t len);

/* One replica moved: the one in slot `slot` of a row, `from` -> `to`. */
typedef struct ts_placement_move {
  int slot, from, to;
} ts_placement_move;

/* Re-places the replicas of one shard (`shard_id`, `len` bytes; its row
 * of n replicas): every replica on worker `from` when from >= 0 (emptying
 * it), or, when from < 0, each replica a target of higher weight should
 * hold instead (rebalancing). Rewrites row in place, rebooks each move, records it in
 * moved[] (room for n) and returns how many moved; adds to *unplaced the
 * replicas it should have moved but found no target for. */
int ts_placement_move_row(ts_membership *c, int from, const char *shard_id,
                          int *row, int n, size_t len,
                          ts_placement_move *moved, int *unplaced);

#endif
