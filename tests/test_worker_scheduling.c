/*
 * test_worker_scheduling.c - the worker daemon with one kernel thread: the
 * queue, deadlines and cancellation of queued and running calls, SIGTERM
 * while a run executes; then the command line and systemd notification.
 * Each test starts its own worker (worker_check.h).
 */
#include "check_main.h"
#include "worker_check.h"

/* ---- scheduling: one kernel thread ------------------------------------- */

typedef struct async_tally {
  atomic_int done;
  atomic_int ok;
  atomic_int exhausted;
  atomic_int cancelled;
  atomic_int other;
  atomic_int last_code;
} async_tally;

static void tally_done(void *user, const ts_rpc_result *res) {
  async_tally *t = user;
  if (res->code == TS_OK)
    atomic_fetch_add(&t->ok, 1);
  else if (res->code == TS_EEXHAUSTED)
    atomic_fetch_add(&t->exhausted, 1);
  else if (res->code == TS_ECANCELLED)
    atomic_fetch_add(&t->cancelled, 1);
  else {
    atomic_fetch_add(&t->other, 1);
    atomic_store(&t->last_code, res->code);
  }
  atomic_fetch_add(&t->done, 1);
}

static void wait_done(async_tally *t, int n, int timeout_ms) {
  int64_t end = ts_now_ms() + timeout_ms;
  while (atomic_load(&t->done) < n && ts_now_ms() < end) usleep(5000);
  ck_assert_int_eq(atomic_load(&t->done), n);
}

static uint64_t runs_total(worker_proc *w) {
  Tessera__Worker__V1__StatusResponse *s = status(w);
  uint64_t n = s->runs_total;
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
  return n;
}

/* Starts a run of X[rows, g->K] asynchronously; returns its handle. */
static ts_rpc_outcall *run_async(ts_rpc_client *c, worker_proc *w,
                                 const gemm *g, const float *x, int64_t rows,
                                 int64_t deadline, async_tally *t) {
  run_req r;
  run_req_init(&r, g->id, x, rows, g->K);
  size_t len;
  uint8_t *buf = pack_msg(&r.req.base, &len);
  ts_rpc_outcall *h = NULL;
  ck_assert_int_eq(ts_rpc_call_async(c, w->ch, SVC "RunShard", buf, len,
                                     deadline, tally_done, t, &h),
                   0);
  free(buf);
  return h;
}

/* Waits until the worker reports a run executing. */
static void wait_in_flight(worker_proc *w) {
  int64_t end = ts_now_ms() + 30000;
  for (;;) {
    Tessera__Worker__V1__StatusResponse *s = status(w);
    uint32_t n = s->in_flight;
    tessera__worker__v1__status_response__free_unpacked(s, NULL);
    if (n > 0) return;
    ck_assert_msg(ts_now_ms() < end, "the slow run never started");
    usleep(2000);
  }
}

START_TEST(test_queue_deadline_cancel) {
  worker_proc w;
  static const char *const args[] = {"--threads", "1", NULL};
  worker_start(&w, args);
  /* 64 Gemm layers of 1024 x 1024 sharing one 4 MB weight: a run of 1024
   * rows is 137 GFLOP, over a second on one thread, with small messages
   * (long enough for what happens behind it, short enough that a loaded
   * machine still finishes it inside the worker's 10 s leave). */
  gemm g;
  gemm_make_layers(&g, 1024, 1024, 8, 64, 0.05f);
  load_ok(&w, &g, MiB, "slow/s0");
  int64_t slow_rows = 1024;
  float *xs = malloc((size_t)(slow_rows * g.K) * sizeof(float));
  ck_assert_ptr_nonnull(xs);
  fill(xs, (size_t)(slow_rows * g.K), 9);
  float *x1 = xs; /* one row for the small runs */

  ts_rpc_client *c = NULL;
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_client_create(&c, &err), 0);
  uint64_t runs0 = runs_total(&w);

  async_tally slow = {0};
  run_async(c, &w, &g, xs, slow_rows, ts_now_ms() + CALL_MS, &slow);
  wait_in_flight(&w);

  /* Queued behind the slow run with a 200 ms deadline: answered
   * DEADLINE_EXCEEDED, and never run. */
  run_req r;
  run_req_init(&r, g.id, x1, 1, g.K);
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  int rc = run_shard(&w, &r, &resp, ts_now_ms() + 200, &err);
  ck_assert_msg(rc == TS_ETIMEDOUT, "got %d: %s", rc, err.msg);

  /* Queued, then cancelled by the client: never run. */
  async_tally cancelled = {0};
  ts_rpc_outcall *h = run_async(c, &w, &g, x1, 1, ts_now_ms() + CALL_MS,
                                &cancelled);
  usleep(50000);
  ts_rpc_outcall_cancel(h);
  wait_done(&cancelled, 1, 10000);
  ck_assert_int_eq(atomic_load(&cancelled.cancelled), 1);
  /* Both leave the queue while the slow run is still going, and are
   * counted as dropped. The client sees its own cancel at once; the
   * worker learns of it from the transport a moment later. */
  Tessera__Worker__V1__StatusResponse *st = status(&w);
  for (int64_t until = ts_now_ms() + 5000;
       (st->queue_depth != 0 || st->runs_cancelled != 2) &&
       ts_now_ms() < until;) {
    tessera__worker__v1__status_response__free_unpacked(st, NULL);
    usleep(2000);
    st = status(&w);
  }
  ck_assert_int_eq(atomic_load(&slow.done), 0);
  ck_assert_uint_eq(st->queue_depth, 0);
  ck_assert_uint_eq(st->runs_cancelled, 2);
  tessera__worker__v1__status_response__free_unpacked(st, NULL);

  /* Flood: 300 runs against a queue of 256; the excess is refused with
   * RESOURCE_EXHAUSTED and every call gets exactly one answer. */
  async_tally flood = {0};
  enum { FLOOD = 300 };
  for (int i = 0; i < FLOOD; i++)
    run_async(c, &w, &g, x1, 1, ts_now_ms() + CALL_MS, &flood);
  wait_done(&flood, FLOOD, CALL_MS);
  wait_done(&slow, 1, CALL_MS);
  ck_assert_int_eq(atomic_load(&slow.ok), 1);
  printf("flood: %d ok, %d RESOURCE_EXHAUSTED, %d other (last %d)\n",
         atomic_load(&flood.ok), atomic_load(&flood.exhausted),
         atomic_load(&flood.other), atomic_load(&flood.last_code));
  ck_assert_int_eq(atomic_load(&flood.other), 0);
  ck_assert_int_ge(atomic_load(&flood.exhausted), 1);
  ck_assert_int_ge(atomic_load(&flood.ok), 1);
  ck_assert_int_le(atomic_load(&flood.ok), 256);

  /* What ran: the slow run and the accepted flood, nothing else. */
  ck_assert_uint_eq(runs_total(&w),
                    runs0 + 1 + (uint64_t)atomic_load(&flood.ok));

  /* SIGTERM while a run executes: health turns NOT_SERVING, runs that
   * still arrive (the coordinator moves shards away meanwhile) are served,
   * a second SIGTERM changes nothing, the run in flight still completes,
   * then, once runs stop arriving, the worker exits 0. */
  async_tally last = {0};
  run_async(c, &w, &g, xs, slow_rows / 2, ts_now_ms() + CALL_MS, &last);
  wait_in_flight(&w);
  kill(w.pid, SIGTERM);
  int64_t end = ts_now_ms() + 10000;
  while (health(&w) != NOT_SERVING) {
    ck_assert_msg(ts_now_ms() < end, "health never turned NOT_SERVING");
    usleep(5000);
  }
  rc = run_shard(&w, &r, &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == TS_OK, "run during the leave: %d %s", rc, err.msg);
  tessera__worker__v1__run_shard_response__free_unpacked(resp, NULL);
  kill(w.pid, SIGTERM);
  ck_assert_int_eq(worker_wait(&w, 60000), 0);
  wait_done(&last, 1, 10000);
  ck_assert_msg(atomic_load(&last.ok) == 1,
                "the in-flight run was not finished before exit");
  ts_rpc_client_free(c);
  free(xs);
  gemm_free(&g);
}
END_TEST

START_TEST(test_command_line) {
  /* Bad options exit 2 at once, without serving. */
  static const char *const cases[][4] = {
      {"--join", NULL}, /* missing its argument */
      {"--threads", "0", NULL},
      {"--threads", "many", NULL},
      {"--memory-limit", "12Q", NULL},
      {"--memory-limit", "-5", NULL},
      {"--bogus", NULL},
  };
  const char *build = getenv("TESSERA_BUILD");
  char bin[4096];
  snprintf(bin, sizeof bin, "%s/worker/tessera-worker", build);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *argv[8] = {bin, "--listen", "127.0.0.1:0"};
    int argc = 3;
    for (int k = 0; cases[i][k]; k++) argv[argc++] = cases[i][k];
    argv[argc] = NULL;
    pid_t pid = spawn(bin, argv, -1);
    ck_assert_int_gt(pid, 0);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2,
                  "%s %s: status %d", cases[i][0],
                  cases[i][1] ? cases[i][1] : "", st);
  }
  /* Sizes with suffixes are accepted and reported. */
  worker_proc w;
  static const char *const args[] = {"--memory-limit", "3G", "--threads", "3",
                                     NULL};
  worker_start(&w, args);
  Tessera__Worker__V1__StatusResponse *s = status(&w);
  ck_assert_uint_eq(s->memory_limit, 3ull << 30);
  ck_assert_uint_eq(s->threads, 3);
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
  ck_assert_int_eq(worker_stop(&w, 30000), 0);
}
END_TEST

START_TEST(test_systemd_notify) {
#if TS_HAVE_SYSTEMD
  /* Play systemd: READY=1 once serving, STOPPING=1 on SIGTERM. */
  char path[108];
  snprintf(path, sizeof path, "/tmp/tessera-notify-%d", (int)getpid());
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  setenv("NOTIFY_SOCKET", path, 1);
  worker_proc w;
  worker_start(&w, NULL);
  unsetenv("NOTIFY_SOCKET");
  const char *want[] = {"READY=1", "STOPPING=1"};
  for (int i = 0; i < 2; i++) {
    if (i == 1) kill(w.pid, SIGTERM);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 20000) == 1, "no %s", want[i]);
    char msg[256];
    ssize_t n = recv(fd, msg, sizeof msg - 1, 0);
    ck_assert_int_gt(n, 0);
    msg[n] = '\0';
    ck_assert_msg(strstr(msg, want[i]) != NULL, "got '%s', want %s", msg,
                  want[i]);
  }
  ck_assert_int_eq(worker_wait(&w, 30000), 0);
  close(fd);
  unlink(path);
#else
  printf("built without libsystemd: sd_notify not tested\n");
#endif
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("worker_scheduling");
  TCase *tc = ts_check_tcase(s, "scheduling", 280, NULL, NULL);
  tcase_add_test(tc, test_queue_deadline_cancel);
  tcase_add_test(tc, test_command_line);
  tcase_add_test(tc, test_systemd_notify);
  return s;
}

const ts_check_suite ts_check_this_suite = WORKER_CHECK_SUITE(suite);
