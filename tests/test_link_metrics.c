/*
 * test_link_metrics.c - the per-worker link figures of
 * coordinator/metrics.c: the health checks' round trip and the RunShard
 * throughput, each an EWMA of weight 0.2 (the first sample sets it), and
 * their median over a list of workers, which `auto` plans with.
 */
#include <check.h>

#include "check_main.h"
#include "metrics.h"

START_TEST(test_rtt_and_throughput_smoothed) {
  ts_link_stats l;
  ts_coord_metrics_worker_link(0, &l);
  ck_assert_uint_eq(l.rtt_us, 0); /* not measured yet */
  ck_assert_uint_eq(l.bytes_per_s, 0);
  ts_coord_metrics_worker_rtt(0, 100e-6);
  ts_coord_metrics_worker_rtt(0, 200e-6); /* 0.2 * 200 + 0.8 * 100 */
  ts_coord_metrics_worker_call(0, 1000000, 1.0);
  ts_coord_metrics_worker_call(0, 6000000, 1.0); /* 0.2 * 6e6 + 0.8 * 1e6 */
  ts_coord_metrics_worker_call(0, 5, 0);         /* no time: ignored */
  ts_coord_metrics_worker_call(-1, 5, 1);        /* no such worker */
  ts_coord_metrics_worker_link(0, &l);
  ck_assert_uint_eq(l.rtt_us, 120);
  ck_assert_uint_eq(l.bytes_per_s, 2000000);
  ts_coord_metrics_worker_link(-1, &l);
  ck_assert_uint_eq(l.rtt_us, 0);
}
END_TEST

/* Workers 1..4: three measured (300, 100, 200 us), one not; the median
 * leaves the unmeasured one out. */
START_TEST(test_median_of_measured) {
  ts_coord_metrics_worker_rtt(1, 300e-6);
  ts_coord_metrics_worker_rtt(2, 100e-6);
  ts_coord_metrics_worker_rtt(3, 200e-6);
  ts_coord_metrics_worker_call(1, 4000, 1.0);
  ts_coord_metrics_worker_call(2, 8000, 1.0);
  ts_link_stats m;
  ts_coord_metrics_link_median((const int[]){1, 2, 3, 4}, 4, &m);
  ck_assert_uint_eq(m.rtt_us, 200);
  ck_assert_uint_eq(m.bytes_per_s, 6000); /* even count: the mean of two */
  ts_coord_metrics_link_median((const int[]){4}, 1, &m);
  ck_assert_uint_eq(m.rtt_us, 0);
  ck_assert_uint_eq(m.bytes_per_s, 0);
}
END_TEST

TS_CHECK_ONE_CASE_SUITE("link_metrics", "link", 30, NULL, NULL,
                        test_rtt_and_throughput_smoothed,
                        test_median_of_measured);
