/*
 * check_main.h - the one Check runner every C unit suite shares.
 *
 * A suite file (tests/test_<module>.c) has no main(): it defines one
 * descriptor, ts_check_this_suite, and check_main.c's main() runs it:
 *
 *   static void cases(Suite *s) {
 *     TS_CHECK_CASE(s, "sha256", 0, NULL, NULL, test_empty, test_abc);
 *   }
 *   const ts_check_suite ts_check_this_suite = {.name = "hash",
 *                                               .cases = cases};
 *
 * or, for a suite of one test case and no other field, the same as
 *
 *   TS_CHECK_ONE_CASE_SUITE("hash", "sha256", 0, NULL, NULL, test_empty,
 *                           test_abc);
 *
 * The runner prints Check's normal report and exits 0 when every test
 * passed, 1 otherwise, which is what `meson test` reads. CK_FORK=no in the
 * environment still turns forking off for a debugger, as Check documents.
 */
#ifndef TS_CHECK_MAIN_H
#define TS_CHECK_MAIN_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ts_check_suite {
  /* The suite's name; the runner creates the Suite and passes it to cases,
   * which adds its test cases (TS_CHECK_CASE). Required, unless make is
   * given instead. */
  const char *name;
  void (*cases)(Suite *s);
  /* Optional, instead of name and cases: builds the whole suite itself
   * (the runner owns and frees it). */
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

/* ts_check_tcase, then adds tests, a NULL-terminated list, to the new test
 * case in their order; returns the test case (s owns it). */
TCase *ts_check_tcase_tests(Suite *s, const char *name, int timeout_s,
                            void (*setup)(void), void (*teardown)(void),
                            const TTest *const *tests);

/* Fresh directory for a test's files: buf becomes /tmp/PREFIX.XXXXXX made
 * by mkdtemp (a failed check when it cannot be made). */
void ts_check_tmpdir(char *buf, size_t size, const char *prefix);
/* Removes dir and everything below it (a failed check when that fails). */
void ts_check_rmtree(const char *dir);

/* One test case as one call: its name, timeout and fixture as
 * ts_check_tcase takes them, then the tests (START_TEST names) it runs. */
#define TS_CHECK_CASE(s, name, timeout_s, setup, teardown, ...) \
  ts_check_tcase_tests(s, name, timeout_s, setup, teardown,     \
                       (const TTest *const[]){__VA_ARGS__, NULL})

/* A suite of one test case and nothing else (no before, after or no_fork),
 * as one declaration: defines its cases() and ts_check_this_suite named
 * suite_name; the test case is TS_CHECK_CASE's, named case_name. */
#define TS_CHECK_ONE_CASE_SUITE(suite_name, case_name, timeout_s, setup,  \
                                teardown, ...)                            \
  static void cases(Suite *s) {                                           \
    TS_CHECK_CASE(s, case_name, timeout_s, setup, teardown, __VA_ARGS__); \
  }                                                                       \
  const ts_check_suite ts_check_this_suite = {.name = suite_name,         \
                                              .cases = cases}

#endif
