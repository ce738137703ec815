/*
 * check_main.c - main() for every C unit suite: runs the suite that the
 * linked test_<module>.c describes in ts_check_this_suite (check_main.h).
 */
#include "check_main.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TCase *ts_check_tcase(Suite *s, const char *name, int timeout_s,
                      void (*setup)(void), void (*teardown)(void)) {
  TCase *tc = tcase_create(name);
  if (timeout_s > 0) tcase_set_timeout(tc, timeout_s);
  if (setup || teardown) tcase_add_checked_fixture(tc, setup, teardown);
  suite_add_tcase(s, tc);
  return tc;
}

TCase *ts_check_tcase_tests(Suite *s, const char *name, int timeout_s,
                            void (*setup)(void), void (*teardown)(void),
                            const TTest *const *tests) {
  TCase *tc = ts_check_tcase(s, name, timeout_s, setup, teardown);
  for (; *tests; tests++) tcase_add_test(tc, *tests);
  return tc;
}

void ts_check_tmpdir(char *buf, size_t size, const char *prefix) {
  int n = snprintf(buf, size, "/tmp/%s.XXXXXX", prefix);
  ck_assert_msg(n > 0 && (size_t)n < size, "tmpdir name too long");
  ck_assert_msg(mkdtemp(buf) != NULL, "mkdtemp %s: %s", buf, strerror(errno));
}

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

void ts_check_rmtree(const char *dir) {
  ck_assert_msg(nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0,
                "removing %s: %s", dir, strerror(errno));
}

int main(int argc, char **argv) {
  const ts_check_suite *desc = &ts_check_this_suite;
  if (desc->before) {
    int rc = desc->before(argc, argv);
    if (rc >= 0) return rc;
  }
  Suite *s = NULL;
  if (desc->make) {
    s = desc->make();
  } else {
    s = suite_create(desc->name);
    desc->cases(s);
  }
  SRunner *sr = srunner_create(s);
  if (desc->no_fork) srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (desc->after) desc->after();
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
