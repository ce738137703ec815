/*
 * check_main.h - the one Check runner every C unit suite shares.
 *
 * A suite file (tests/test_<module>.c) has no main(): it defines one
 * descriptor, ts_check_this_suite, and check_main.c's main() runs it:
 *
 *   static Suite *suite(void) {
 *     Suite *s = suite_create("hash");
 *     TCase *tc = ts_check_tcase(s, "sha256", 0, NULL, NULL);
 *     tcase_add_test(tc, test_empty);
 *     return s;
 *   }
 *   const ts_check_suite ts_check_this_suite = {.make = suite};
 *
 * The runner prints Check's normal report and exits 0 when every test
 * passed, 1 otherwise, which is what `meson test` reads. CK_FORK=no in the
 * environment still turns forking off for a debugger, as Check documents.
 */
#ifndef TS_CHECK_MAIN_H
#define TS_CHECK_MAIN_H

#include <check.h>
#include <stdbool.h>

typedef struct ts_check_suite {
  /* Builds the suite; the runner owns and frees it. Required. */
  Suite *(*make)(void);
  /* Optional: runs first with main's arguments (a suite that re-executes
   * itself, as test_blas does, reads its own flags here). Returns a
   * negative value to go on to the suite, or an exit status to end with
   * at once without running it. */
  int (*before)(int argc, char **argv);
  /* Optional: runs after the suite, whatever its result (frees what
   * before or a test's unchecked fixture left for the process). */
  void (*after)(void);
  /* Run every test in the runner's own process (CK_NOFORK), for suites
   * whose unchecked fixtures start daemons the tests then share. */
  bool no_fork;
} ts_check_suite;

/* Defined by each suite file; read by check_main.c's main(). */
extern const ts_check_suite ts_check_this_suite;

/* Creates a test case named name, adds it to s and returns it (s owns it).
 * timeout_s > 0 replaces Check's default of 4 s (CK_DEFAULT_TIMEOUT and
 * CK_TIMEOUT_MULTIPLIER still apply on top, as Check documents). setup and
 * teardown, when not NULL, are its checked fixture: they run around each
 * test, in the test's own process. */
TCase *ts_check_tcase(Suite *s, const char *name, int timeout_s,
                      void (*setup)(void), void (*teardown)(void));

#endif
