/*
 * test_options.c - the shared text forms of options.h: every size unit
 * (plain, K/M/G/T, with i and B, both cases), overflow, garbage, empty and
 * negative text for sizes and integers, and HOST of HOST:PORT.
 */
#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "options.h"

static void expect_size(const char *text, uint64_t want) {
  uint64_t got = 12345;
  ts_err err = {0};
  ck_assert_msg(ts_size_parse(text, &got, &err) == TS_OK, "'%s': %s", text,
                err.msg);
  ck_assert_msg(got == want, "'%s' gave %llu, want %llu", text,
                (unsigned long long)got, (unsigned long long)want);
}

/* Refused with TS_EINVAL, out untouched, and a message quoting the text. */
static void expect_bad_size(const char *text) {
  uint64_t got = 12345;
  ts_err err = {0};
  ck_assert_msg(ts_size_parse(text, &got, &err) == TS_EINVAL, "'%s' accepted",
                text ? text : "(null)");
  ck_assert_int_eq(err.code, TS_EINVAL);
  ck_assert_uint_eq(got, 12345);
  char quoted[64];
  snprintf(quoted, sizeof quoted, "'%s'", text ? text : "");
  ck_assert_msg(strstr(err.msg, quoted), "message '%s' lacks %s", err.msg,
                quoted);
}

START_TEST(test_size_plain) {
  expect_size("0", 0);
  expect_size("512", 512);
  expect_size("512B", 512);
  expect_size("512b", 512);
  expect_size("18446744073709551615", UINT64_MAX);
}
END_TEST

START_TEST(test_size_units) {
  static const char *const letters[] = {"K", "M", "G", "T"};
  static const char *const suffixes[] = {"", "B", "iB", "i"};
  for (int u = 0; u < 4; u++) {
    uint64_t want = 3ull << (10 * (u + 1));
    for (int f = 0; f < 4; f++) {
      char text[32];
      snprintf(text, sizeof text, "3%s%s", letters[u], suffixes[f]);
      expect_size(text, want);
      for (char *p = text; *p; p++)  /* lower-case letters mean the same */
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
      expect_size(text, want);
    }
  }
  expect_size("1GiB", 1ull << 30);
  expect_size("1TB", 1ull << 40);
  expect_size("64k", 64ull << 10);
  expect_size("1gB", 1ull << 30);
}
END_TEST

START_TEST(test_size_overflow) {
  expect_bad_size("18446744073709551616");        /* UINT64_MAX + 1 */
  expect_bad_size("99999999999999999999999999");
  expect_bad_size("16777216T");                   /* 2^24 T = 2^64 */
  expect_bad_size("17179869184G");                /* 2^34 G = 2^64 */
  expect_size("16777215T", 16777215ull << 40);   /* the largest T */
  expect_size("17179869183G", 17179869183ull << 30);
}
END_TEST

START_TEST(test_size_garbage) {
  expect_bad_size("12Q");
  expect_bad_size("lots");
  expect_bad_size("1.5G");
  expect_bad_size("1e3");
  expect_bad_size("0x10");
  expect_bad_size("1GG");
  expect_bad_size("1KBB");
  expect_bad_size("1iB");   /* i only after a unit */
  expect_bad_size("1GIB");  /* i is lower-case only */
  expect_bad_size("1Bi");
  expect_bad_size("1 G");
  expect_bad_size(" 1G");
  expect_bad_size("1G ");
  expect_bad_size("G");
  expect_bad_size("B");
}
END_TEST

START_TEST(test_size_empty) {
  expect_bad_size("");
  expect_bad_size(NULL);
}
END_TEST

START_TEST(test_size_negative) {
  expect_bad_size("-5");
  expect_bad_size("-1");
  expect_bad_size("-0");
  expect_bad_size("+5");
  expect_bad_size("-1G");
}
END_TEST

START_TEST(test_size_null_err) {
  uint64_t got = 0;
  ck_assert_int_eq(ts_size_parse("x", &got, NULL), TS_EINVAL);
  ck_assert_int_eq(ts_size_parse("2K", &got, NULL), TS_OK);
  ck_assert_uint_eq(got, 2048);
}
END_TEST

static void expect_int(const char *text, long long lo, long long hi,
                       long long want) {
  long long got = 12345;
  ts_err err = {0};
  ck_assert_msg(ts_integer_parse(text, lo, hi, &got, &err) == TS_OK,
                "'%s': %s", text, err.msg);
  ck_assert_msg(got == want, "'%s' gave %lld", text, got);
}

static void expect_bad_int(const char *text, long long lo, long long hi) {
  long long got = 12345;
  ts_err err = {0};
  ck_assert_msg(ts_integer_parse(text, lo, hi, &got, &err) == TS_EINVAL,
                "'%s' accepted", text ? text : "(null)");
  ck_assert_int_eq(got, 12345);
  ck_assert_ptr_nonnull(strstr(err.msg, "is not an integer"));
}

START_TEST(test_integer_range) {
  expect_int("0", 0, 64, 0);
  expect_int("64", 0, 64, 64);
  expect_int("+7", 0, 64, 7);
  expect_int("-3", -5, 5, -3);
  expect_bad_int("65", 0, 64);
  expect_bad_int("-1", 0, 64);
  expect_int("9223372036854775807", 0, LLONG_MAX, LLONG_MAX);
  expect_int("-9223372036854775808", LLONG_MIN, 0, LLONG_MIN);
}
END_TEST

START_TEST(test_integer_messages) {
  ts_err err = {0};
  long long got;
  ck_assert_int_eq(ts_integer_parse("65", 0, 64, &got, &err), TS_EINVAL);
  ck_assert_str_eq(err.msg, "'65' is not an integer in [0, 64]");
  ck_assert_int_eq(ts_integer_parse("-1", 1, LLONG_MAX, &got, &err),
                   TS_EINVAL);
  ck_assert_str_eq(err.msg, "'-1' is not an integer >= 1");
}
END_TEST

START_TEST(test_integer_overflow) {
  expect_bad_int("9223372036854775808", 0, LLONG_MAX);
  expect_bad_int("-9223372036854775809", LLONG_MIN, 0);
  expect_bad_int("99999999999999999999999", LLONG_MIN, LLONG_MAX);
}
END_TEST

START_TEST(test_integer_garbage) {
  expect_bad_int("", 0, 10);
  expect_bad_int(NULL, 0, 10);
  expect_bad_int("-", -10, 10);
  expect_bad_int("+", 0, 10);
  expect_bad_int("1x", 0, 10);
  expect_bad_int("1K", 0, 10000);
  expect_bad_int(" 1", 0, 10);
  expect_bad_int("1 ", 0, 10);
  expect_bad_int("0x1", 0, 10);
  expect_bad_int("1.0", 0, 10);
  expect_bad_int("--1", -10, 10);
}
END_TEST

START_TEST(test_host_length) {
  ck_assert_uint_eq(ts_hostport_host_length("127.0.0.1:0"), 9);
  ck_assert_uint_eq(ts_hostport_host_length("[::]:8000"), 4);
  ck_assert_uint_eq(ts_hostport_host_length(":8000"), 0);
  ck_assert_uint_eq(ts_hostport_host_length("localhost"), 9);
  ck_assert_uint_eq(ts_hostport_host_length(""), 0);
}
END_TEST

/* Refused with TS_EINVAL and a message quoting `shown` (the address as
 * escaped for logs). */
static void expect_bad_address(const char *address, const char *shown) {
  ts_err err = {0};
  ck_assert_msg(ts_address_check(address, &err) == TS_EINVAL, "'%s' accepted",
                shown);
  char quoted[300];
  snprintf(quoted, sizeof quoted, "address '%s' is not HOST:PORT", shown);
  ck_assert_msg(strstr(err.msg, quoted), "'%s' lacks \"%s\"", err.msg, quoted);
}

START_TEST(test_address_good) {
  static const char *const good[] = {
      "127.0.0.1:1",      "localhost:65535", "worker-3.example.com:8001",
      "[::1]:8000",       "[fe80::1]:50051", "[::ffff:10.0.0.1]:9",
      "a:80",             "10.1.2.3:50051",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    ts_err err = {0};
    ck_assert_msg(ts_address_check(good[i], &err) == TS_OK, "'%s': %s",
                  good[i], err.msg);
  }
}
END_TEST

START_TEST(test_address_bad) {
  expect_bad_address("unix:/tmp/sock", "unix:/tmp/sock");
  expect_bad_address("unix:///tmp/sock:1", "unix:///tmp/sock:1");
  expect_bad_address("dns:///h:1", "dns:///h:1");
  expect_bad_address("ipv4:127.0.0.1:1", "ipv4:127.0.0.1:1");
  expect_bad_address("127.0.0.1", "127.0.0.1");
  expect_bad_address("127.0.0.1:", "127.0.0.1:");
  expect_bad_address(":8000", ":8000");
  expect_bad_address("h:0", "h:0");
  expect_bad_address("h:65536", "h:65536");
  expect_bad_address("h:99999999999", "h:99999999999");
  expect_bad_address("h:080", "h:080");
  expect_bad_address("h:-1", "h:-1");
  expect_bad_address("h:+1", "h:+1");
  expect_bad_address("h: 1", "h: 1");
  expect_bad_address("a b:1", "a b:1");
  expect_bad_address("h\n:1", "h\\x0a:1");
  expect_bad_address("h:1\r\nFAKE LOG", "h:1\\x0d\\x0aFAKE LOG");
  expect_bad_address("-h:1", "-h:1");
  expect_bad_address("h..x:1", "h..x:1");
  expect_bad_address("::1:80", "::1:80");
  expect_bad_address("[::1]x:80", "[::1]x:80");
  expect_bad_address("[g::1]:80", "[g::1]:80");
  expect_bad_address("", "");
  ts_err err = {0};
  ck_assert_int_eq(ts_address_check(NULL, &err), TS_EINVAL);
  char longest[300];
  memset(longest, 'a', sizeof longest);
  snprintf(longest + 250, 50, ".b:1");
  ck_assert_int_eq(ts_address_check(longest, &err), TS_EINVAL);
}
END_TEST

START_TEST(test_text_escape) {
  char out[64];
  ts_text_escape("plain text", 100, out, sizeof out);
  ck_assert_str_eq(out, "plain text");
  ts_text_escape("a\nb\\c\x7f\xff", 100, out, sizeof out);
  ck_assert_str_eq(out, "a\\x0ab\\\\c\\x7f\\xff");
  ts_text_escape("abcdef", 3, out, sizeof out);
  ck_assert_str_eq(out, "abc");
  ts_text_escape("abcdefghij", 100, out, 8);
  ck_assert_str_eq(out, "abcd...");
  ts_text_escape("\n\n\n", 100, out, 8);
  ck_assert_str_eq(out, "\\x0a...");
  ts_text_escape("abc", 100, out, 2);
  ck_assert_str_eq(out, "a");
}
END_TEST

static void expect_bad_list(const char *text, int max, const char *why) {
  char items[4][TS_ADDRESS_MAX];
  int n = -1;
  ts_err err = {0};
  ck_assert_msg(ts_address_list_split(text, max, items, &n, &err) == TS_EINVAL,
                "'%s' accepted", text ? text : "(null)");
  ck_assert_msg(strstr(err.msg, why), "'%s' lacks \"%s\"", err.msg, why);
  ck_assert_int_eq(n, -1); /* written only on success */
}

START_TEST(test_address_list) {
  char items[4][TS_ADDRESS_MAX];
  int n = 0;
  ts_err err = {0};
  ck_assert_int_eq(ts_address_list_split("a:1", 4, items, &n, &err), TS_OK);
  ck_assert_int_eq(n, 1);
  ck_assert_str_eq(items[0], "a:1");
  ck_assert_int_eq(ts_address_list_split("a:1,[::1]:2,c", 3, items, &n, &err),
                   TS_OK);
  ck_assert_int_eq(n, 3);
  ck_assert_str_eq(items[0], "a:1");
  ck_assert_str_eq(items[1], "[::1]:2");
  ck_assert_str_eq(items[2], "c");
  expect_bad_list("", 4, "empty address list");
  expect_bad_list(NULL, 4, "empty address list");
  expect_bad_list("a:1,,b:2", 4, "address list 'a:1,,b:2' has an empty item");
  expect_bad_list("a:1,", 4, "has an empty item");
  expect_bad_list(",a:1", 4, "has an empty item");
  expect_bad_list("a:1,b:2,c:3", 2, "has more than 2 items");
  expect_bad_list("a:1,b:2,a:1", 4, "names 'a:1' twice");
  expect_bad_list("a:1,x\n:2,x\n:2", 4, "names 'x\\x0a:2' twice");
  char longest[400];
  memset(longest, 'a', sizeof longest);
  snprintf(longest + 300, 50, ":1,b:2");
  expect_bad_list(longest, 4, "longer than 255 bytes");
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "size", 0, NULL, NULL, test_size_plain, test_size_units,
                test_size_overflow, test_size_garbage, test_size_empty,
                test_size_negative, test_size_null_err);
  TS_CHECK_CASE(s, "integer", 0, NULL, NULL, test_integer_range,
                test_integer_messages, test_integer_overflow,
                test_integer_garbage);
  TS_CHECK_CASE(s, "hostport", 0, NULL, NULL, test_host_length,
                test_address_good, test_address_bad, test_text_escape,
                test_address_list);
}

const ts_check_suite ts_check_this_suite = {.name = "options", .cases = cases};
