/* scheduler.c - see scheduler.h. */
#include "scheduler.h"

#include <stdatomic.h>

static atomic_uint rr_counter;

/* xorshift per thread: cheap, no locks, good enough for sampling. */
static unsigned next_random(void) {
  static _Thread_local unsigned state = 0;
  if (state == 0)
    state = (unsigned)(uintptr_t)&state ^ 0x9e3779b9u ^
            atomic_fetch_add(&rr_counter, 1) * 2654435761u;
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

static int eligible(ts_membership *c, const int *replicas, int pos,
                    uint64_t exclude) {
  return !(pos < 64 && (exclude >> pos) & 1) &&
         atomic_load(&c->workers[replicas[pos]].up);
}

/* Load per unit of capacity; compared by cross-multiplying to stay exact. */
static int less_loaded(ts_membership *c, int a, int b) {
  ts_worker *wa = &c->workers[a], *wb = &c->workers[b];
  long la = (long)atomic_load(&wa->outstanding) + 1;
  long lb = (long)atomic_load(&wb->outstanding) + 1;
  return la * wb->threads < lb * wa->threads;
}

int ts_sched_pick(ts_membership *c, const int *replicas, int n,
                  uint64_t exclude, ts_sched_policy policy) {
  int candidates[64];
  int m = 0;
  for (int i = 0; i < n && m < 64; i++)
    if (eligible(c, replicas, i, exclude)) candidates[m++] = i;
  if (m == 0) return -1;
  if (m == 1) return candidates[0];
  if (policy == TS_SCHED_ROUND_ROBIN)
    return candidates[atomic_fetch_add(&rr_counter, 1) % (unsigned)m];
  /* Two distinct samples: j skips over i. */
  int i = (int)(next_random() % (unsigned)m);
  int j = (int)(next_random() % (unsigned)(m - 1));
  if (j >= i) j++;
  int a = candidates[i], b = candidates[j];
  return less_loaded(c, replicas[b], replicas[a]) ? b : a;
}
