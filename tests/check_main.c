/*
 * check_main.c - main() for every C unit suite: runs the suite that the
 * linked test_<module>.c describes in ts_check_this_suite (check_main.h).
 */
#include "check_main.h"

#include <stdlib.h>

TCase *ts_check_tcase(Suite *s, const char *name, int timeout_s,
                      void (*setup)(void), void (*teardown)(void)) {
  TCase *tc = tcase_create(name);
  if (timeout_s > 0) tcase_set_timeout(tc, timeout_s);
  if (setup || teardown) tcase_add_checked_fixture(tc, setup, teardown);
  suite_add_tcase(s, tc);
  return tc;
}

int main(int argc, char **argv) {
  const ts_check_suite *desc = &ts_check_this_suite;
  if (desc->before) {
    int rc = desc->before(argc, argv);
    if (rc >= 0) return rc;
  }
  SRunner *sr = srunner_create(desc->make());
  if (desc->no_fork) srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (desc->after) desc->after();
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
