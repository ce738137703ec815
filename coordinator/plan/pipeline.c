/*
 * pipeline.c - the pipeline partition: the live nodes cut into contiguous
 * stages balanced by normalized FLOPs plus normalized weight bytes.
 */
#include "plan_int.h"

#include <math.h>

/* Greedy packing: the fewest contiguous parts of costs[0..m) with sums
 * <= cap (optimal for non-negative costs); writes part starts into starts
 * (room for m) when non-NULL. */
static int pack_parts(const double *costs, int m, double cap, int *starts) {
  int parts = 0;
  double sum = 0;
  for (int i = 0; i < m; i++) {
    if (i == 0 || sum + costs[i] > cap) {
      if (starts) starts[parts] = i;
      parts++;
      sum = 0;
    }
    sum += costs[i];
  }
  return parts;
}

/* Splits costs[0..m) (m >= k >= 1) into exactly k non-empty contiguous parts
 * whose largest sum is minimal (to floating-point precision): bisection on
 * the bottleneck with greedy packing as the test, then parts with several
 * items are split until there are k. Writes the part starts into
 * starts[0..k). O(m) memory, about 100 passes over costs. */
static int linear_partition(const double *costs, int m, int k, int *starts) {
  int *tmp = malloc(((size_t)m + 1) * sizeof *tmp);
  if (!tmp) return TS_ENOMEM;
  double lo = 0, hi = 0;
  for (int i = 0; i < m; i++) {
    lo = fmax(lo, costs[i]);
    hi += costs[i];
  }
  /* Invariant: packing under hi needs <= k parts; under lo, > k (or lo is
   * the largest single cost, below which nothing packs). */
  for (int it = 0; it < 100 && hi > lo * (1 + 1e-12); it++) {
    double mid = lo + (hi - lo) / 2;
    if (pack_parts(costs, m, mid, NULL) <= k)
      hi = mid;
    else
      lo = mid;
  }
  int parts = pack_parts(costs, m, hi, tmp);
  /* Fewer parts than k: split parts (never raising a part's sum) by
   * starting a new part at every item not yet a start, left to right. */
  int extra = k - parts, w = 0;
  tmp[parts] = m;
  for (int p = 0; p < parts; p++) {
    starts[w++] = tmp[p];
    for (int i = tmp[p] + 1; i < tmp[p + 1] && extra > 0; i++, extra--)
      starts[w++] = i;
  }
  free(tmp);
  return w == k ? TS_OK : TS_EINTERNAL;
}

/* Pipeline cuts over all live nodes, balanced by normalized FLOPs plus
 * normalized weight bytes, then each slice laid out with `ways`. */
int plan_layout_pipeline(ctx *c, int stages, int ways) {
  int m = c->n_live;
  double *cost = malloc(((size_t)m + 1) * sizeof *cost);
  int *starts = malloc(((size_t)stages + 1) * sizeof *starts);
  if (!cost || !starts) {
    free(cost), free(starts);
    return TS_ENOMEM;
  }
  double tf = 0, tb = 0;
  for (int p = 0; p < m; p++) {
    double f = ts_graph_node_flops(c->m, c->live[p]);
    cost[p] = f > 0 ? f : 0;
    tf += cost[p];
    tb += c->node_bytes[c->live[p]];
  }
  for (int p = 0; p < m; p++)
    cost[p] = (tf > 0 ? cost[p] / tf : 0) +
              (tb > 0 ? c->node_bytes[c->live[p]] / tb : 0) + 1e-9;
  int rc = linear_partition(cost, m, stages, starts);
  starts[stages] = m;
  for (int s = 0; !rc && s < stages; s++)
    rc = plan_layout_range(c, starts[s], starts[s + 1], ways);
  free(cost), free(starts);
  return rc;
}
