/*
 * test_hash.c - ts_sha256_hex against published SHA-256 test vectors
 * (FIPS 180-2 appendix B and NIST's CAVP short messages).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "hash.h"

static void expect_hash(const void *data, size_t len, const char *want) {
  char got[TS_SHA256_HEX_LEN + 1];
  memset(got, 'x', sizeof got);
  ts_sha256_hex(data, len, got);
  ck_assert_uint_eq(strlen(got), TS_SHA256_HEX_LEN);
  ck_assert_str_eq(got, want);
}

START_TEST(test_empty) {
  expect_hash("", 0,
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  /* NULL with length 0 is the empty message too. */
  expect_hash(NULL, 0,
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(test_abc) {
  expect_hash("abc", 3,
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
END_TEST

START_TEST(test_two_blocks) {
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  expect_hash(m, strlen(m),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}
END_TEST

START_TEST(test_million_a) {
  size_t n = 1000000;
  char *m = malloc(n);
  ck_assert_ptr_nonnull(m);
  memset(m, 'a', n);
  expect_hash(m, n,
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(m);
}
END_TEST

START_TEST(test_one_byte) {
  /* CAVP SHA256ShortMsg, Len = 8, Msg = d3. */
  const unsigned char m[] = {0xd3};
  expect_hash(m, 1,
              "28969cdfa74a12c82f3bad960b0b000aca2ac329deea5c2328ebc6f2ba9802c1");
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("hash");
  TCase *tc = ts_check_tcase(s, "sha256", 0, NULL, NULL);
  tcase_add_test(tc, test_empty);
  tcase_add_test(tc, test_abc);
  tcase_add_test(tc, test_two_blocks);
  tcase_add_test(tc, test_million_a);
  tcase_add_test(tc, test_one_byte);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
