/*
 * test_array.c - ts_array_reserve (common/base/array.c): capacities double
 * from the first one, contents survive a move, a reserve that fits does
 * nothing, and sizes that overflow are refused with the array unchanged.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "array.h"
#include "check_main.h"
#include "error.h"

/* Reserves `need` elements of `size` bytes in the array at items (capacity
 * *cap) and checks the code and the capacity after it; a reserve that fails
 * or fits must leave the pointer where it was. */
static void expect_reserve(void *items, size_t *cap, size_t need, size_t size,
                           size_t first, int rc, size_t want_cap) {
  void *before = *(void **)items;
  size_t cap_before = *cap;
  ck_assert_int_eq(ts_array_reserve(items, cap, need, size, first), rc);
  ck_assert_uint_eq(*cap, want_cap);
  if (rc != TS_OK || need <= cap_before)
    ck_assert_ptr_eq(*(void **)items, before);
  else
    ck_assert_ptr_nonnull(*(void **)items);
}

START_TEST(grows_by_doubling) {
  int *a = NULL;
  size_t cap = 0;
  expect_reserve(&a, &cap, 1, sizeof *a, 16, TS_OK, 16);
  for (int i = 0; i < 16; i++) a[i] = i * 7;
  expect_reserve(&a, &cap, 17, sizeof *a, 16, TS_OK, 32);
  expect_reserve(&a, &cap, 100, sizeof *a, 16, TS_OK, 128);
  for (int i = 0; i < 16; i++) ck_assert_int_eq(a[i], i * 7);
  a[127] = -1; /* the whole capacity is there (ASan checks) */
  free(a);
  char *s = NULL;
  cap = 0;
  expect_reserve(&s, &cap, 5, 1, 0, TS_OK, 8); /* a first of 0 starts at 1 */
  free(s);
}
END_TEST

START_TEST(reserve_that_fits_does_nothing) {
  double *d = NULL;
  size_t cap = 0;
  expect_reserve(&d, &cap, 0, sizeof *d, 4, TS_OK, 0);
  ck_assert_ptr_null(d);
  expect_reserve(&d, &cap, 3, sizeof *d, 4, TS_OK, 4);
  expect_reserve(&d, &cap, 4, sizeof *d, 4, TS_OK, 4);
  free(d);
}
END_TEST

START_TEST(overflow_is_refused) {
  char *s = NULL;
  size_t cap = 0;
  expect_reserve(&s, &cap, 10, 1, 8, TS_OK, 16);
  /* The count would double past SIZE_MAX; count times size would. */
  expect_reserve(&s, &cap, SIZE_MAX / 2 + 2, 1, 8, TS_ENOMEM, 16);
  expect_reserve(&s, &cap, 17, SIZE_MAX / 16, 8, TS_ENOMEM, 16);
  free(s);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "reserve", 0, NULL, NULL, grows_by_doubling,
                reserve_that_fits_does_nothing, overflow_is_refused);
}

const ts_check_suite ts_check_this_suite = {.name = "array", .cases = cases};
