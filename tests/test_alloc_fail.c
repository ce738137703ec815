/*
 * test_alloc_fail.c - common/base/alloc_fail.c, the allocator wrappers of
 * -Dalloc_fail=true: counting, the N-th allocation failing with ENOMEM for
 * every wrapped function, persistence, and the one-shot control file of
 * TESSERA_ALLOC_FAIL_CONTROL (tests/meson.build points it at the build
 * directory). This file's own allocator calls go through the wrappers, as
 * the daemons' do.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc_fail.h"
#include "check_main.h"

/* Where results go, so the compiler keeps each allocation. */
static void *volatile sink;

static void teardown(void) { ts_alloc_fail_arm(0, false); }

/* One allocation through each wrapped function, by index; NULL on failure
 * (posix_memalign's error is turned into errno). Frees what it got. */
enum { N_KINDS = 7 };
static bool allocate(int kind) {
  void *p = NULL;
  errno = 0;
  switch (kind) {
  case 0: p = malloc(16); break;
  case 1: p = calloc(4, 4); break;
  case 2: p = realloc(NULL, 16); break;
  case 3: p = strdup("tessera"); break;
  case 4: p = strndup("tessera", 3); break;
  case 5: p = aligned_alloc(64, 64); break;
  case 6: {
    int rc = posix_memalign(&p, 64, 64);
    if (rc != 0) {
      p = NULL;
      errno = rc;
    }
    break;
  }
  }
  sink = p;
  free(p);
  return p != NULL;
}

/* Runs allocate() for each kind in kinds[0..n), results into ok[] and
 * errno into err[]; nothing between them allocates (Check's own static
 * library is wrapped too, so no ck_assert may run while armed). */
static void run(const int *kinds, int n, bool *ok, int *err) {
  for (int i = 0; i < n; i++) {
    ok[i] = allocate(kinds[i]);
    err[i] = errno;
  }
}

START_TEST(test_counts_every_function) {
  int kinds[N_KINDS] = {0, 1, 2, 3, 4, 5, 6}, err[N_KINDS];
  bool ok[N_KINDS];
  long before = ts_alloc_fail_count();
  run(kinds, N_KINDS, ok, err);
  long counted = ts_alloc_fail_count() - before;
  for (int k = 0; k < N_KINDS; k++) ck_assert_msg(ok[k], "kind %d", k);
  ck_assert_int_eq(counted, N_KINDS);
}
END_TEST

START_TEST(test_nth_fails_once) {
  int kinds[5] = {0, 1, 0, 2, 0}, err[5];
  bool ok[5];
  ts_alloc_fail_arm(3, false);
  run(kinds, 2, ok, err);
  bool fired_early = ts_alloc_fail_fired();
  run(kinds + 2, 3, ok + 2, err + 2);
  bool fired = ts_alloc_fail_fired();
  ts_alloc_fail_arm(0, false);
  ck_assert(ok[0] && ok[1]);
  ck_assert(!fired_early);
  ck_assert(!ok[2]);
  ck_assert_int_eq(err[2], ENOMEM);
  ck_assert(fired);
  ck_assert(ok[3] && ok[4]); /* one-shot: the 4th and 5th succeed */
}
END_TEST

START_TEST(test_every_function_can_fail) {
  for (int k = 0; k < N_KINDS; k++) {
    int kinds[2] = {k, k}, err[2];
    bool ok[2];
    ts_alloc_fail_arm(1, false);
    run(kinds, 2, ok, err);
    ts_alloc_fail_arm(0, false);
    ck_assert_msg(!ok[0], "kind %d did not fail", k);
    ck_assert_int_eq(err[0], ENOMEM);
    ck_assert_msg(ok[1], "kind %d failed twice", k);
  }
}
END_TEST

START_TEST(test_persist_and_disarm) {
  int kinds[6] = {1, 0, 2, 3, 5, 6}, err[6];
  bool ok[6], after[N_KINDS];
  int all[N_KINDS] = {0, 1, 2, 3, 4, 5, 6}, err_after[N_KINDS];
  ts_alloc_fail_arm(2, true);
  run(kinds, 6, ok, err);
  ts_alloc_fail_arm(0, false);
  bool fired = ts_alloc_fail_fired();
  run(all, N_KINDS, after, err_after);
  ck_assert(ok[0]);
  for (int i = 1; i < 6; i++) ck_assert_msg(!ok[i], "allocation %d", i + 1);
  ck_assert(!fired); /* disarming clears it */
  for (int k = 0; k < N_KINDS; k++) ck_assert_msg(after[k], "kind %d", k);
}
END_TEST

/* ---- the control file ---------------------------------------------------- */

/* DIR/PID; no ck_assert, since the callers may run while armed (main()
 * checked TESSERA_ALLOC_FAIL_CONTROL). */
static void control_path(char *buf, size_t size) {
  snprintf(buf, size, "%s/%ld", getenv("TESSERA_ALLOC_FAIL_CONTROL"),
           (long)getpid());
}

static void control_write(const char *text) {
  char path[512];
  control_path(path, sizeof path);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static bool control_exists(void) {
  char path[512];
  control_path(path, sizeof path);
  return access(path, F_OK) == 0;
}

/* ts_alloc_fail_call_end(key) with stderr captured into buf ("?" when
 * the capture failed). */
static void call_end_captured(const void *key, char *buf, size_t size) {
  char path[] = "/tmp/test_alloc_fail.XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    snprintf(buf, size, "?");
    return;
  }
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  ts_alloc_fail_call_end(key);
  dup2(saved, STDERR_FILENO);
  close(saved);
  ssize_t len = pread(fd, buf, size - 1, 0);
  buf[len > 0 ? len : 0] = '\0';
  close(fd);
  unlink(path);
}

START_TEST(test_control_one_call) {
  static const char path[] = "/inference.GRPCInferenceService/ModelInfer";
  int key = 0, other = 0, kinds[4] = {0, 3, 0, 0}, err[4];
  bool ok[4];
  control_write("ModelInfer 2\n");
  /* other methods leave the file alone */
  ck_assert(!ts_alloc_fail_call_begin("/x.Worker/RunShard", &other));
  ck_assert(!ts_alloc_fail_call_begin("/x.Y/SomeModelInfer", &other));
  ck_assert(control_exists());
  bool armed = ts_alloc_fail_call_begin(path, &key);
  bool taken = !control_exists();
  run(kinds, 3, ok, err);
  ts_alloc_fail_call_end(&other); /* not the armed call: still armed */
  char out[256], again[256];
  call_end_captured(&key, out, sizeof out);
  run(kinds + 3, 1, ok + 3, err + 3); /* disarmed */
  call_end_captured(&key, again, sizeof again);
  ck_assert(armed);
  ck_assert(taken);
  ck_assert(ok[0] && !ok[1] && ok[2]);
  ck_assert_int_eq(err[1], ENOMEM);
  ck_assert_str_eq(out, "alloc_fail: ModelInfer made 3 allocations, failed 2\n");
  ck_assert(ok[3]);
  ck_assert_str_eq(again, ""); /* a second end says nothing */
}
END_TEST

START_TEST(test_control_count_only) {
  int key = 0, kinds[N_KINDS] = {0, 1, 2, 3, 4, 5, 6}, err[N_KINDS];
  bool ok[N_KINDS];
  control_write("LoadShard 0");
  bool armed =
      ts_alloc_fail_call_begin("/tessera.worker.v1.Worker/LoadShard", &key);
  run(kinds, N_KINDS, ok, err);
  char out[256];
  call_end_captured(&key, out, sizeof out);
  ck_assert(armed);
  for (int k = 0; k < N_KINDS; k++) ck_assert_msg(ok[k], "kind %d", k);
  ck_assert_str_eq(out, "alloc_fail: LoadShard made 7 allocations, failed none\n");
}
END_TEST

START_TEST(test_control_persistent) {
  int key = 0, kinds[5] = {0, 1, 3, 5, 0}, err[5];
  bool ok[5];
  control_write("RunShard 2+");
  bool armed = ts_alloc_fail_call_begin("/tessera.worker.v1.Worker/RunShard", &key);
  run(kinds, 4, ok, err);
  char out[256];
  call_end_captured(&key, out, sizeof out);
  run(kinds + 4, 1, ok + 4, err + 4); /* disarmed by the end */
  ck_assert(armed);
  ck_assert(ok[0]);
  for (int i = 1; i < 4; i++) {
    ck_assert_msg(!ok[i], "allocation %d", i + 1);
    ck_assert_int_eq(err[i], ENOMEM);
  }
  ck_assert_str_eq(out, "alloc_fail: RunShard made 4 allocations, failed 2+\n");
  ck_assert(ok[4]);
}
END_TEST

START_TEST(test_control_bad_files) {
  int key = 0;
  ck_assert(!ts_alloc_fail_call_begin("/a.B/RunShard", &key)); /* no file */
  const char *bad[] = {"RunShard", "RunShard x", "RunShard -3", "RunShard 0+",
                       "RunShard +", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    control_write(bad[i]);
    ck_assert_msg(!ts_alloc_fail_call_begin("/a.B/RunShard", &key), "%s", bad[i]);
  }
  char path[512];
  control_path(path, sizeof path);
  unlink(path);
}
END_TEST

/* The control file's directory must be set (tests/meson.build does). */
static int before(int argc, char **argv) {
  (void)argc;
  (void)argv;
  if (getenv("TESSERA_ALLOC_FAIL_CONTROL")) return -1;
  fprintf(stderr, "test_alloc_fail: TESSERA_ALLOC_FAIL_CONTROL is not set\n");
  return 1;
}

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "wrappers", 0, NULL, teardown, test_counts_every_function,
                test_nth_fails_once, test_every_function_can_fail,
                test_persist_and_disarm);
  TS_CHECK_CASE(s, "control", 0, NULL, teardown, test_control_one_call,
                test_control_count_only, test_control_persistent,
                test_control_bad_files);
}

const ts_check_suite ts_check_this_suite = {
    .name = "alloc_fail", .cases = cases, .before = before};
