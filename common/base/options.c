/*
 * options.c - sizes, integers and HOST:PORT as the command line and config
 * files write them. See options.h for the grammar.
 */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int upper(char c) { return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c; }

/* The power of 1024 of unit letter c (K: 1 ... T: 4), or 0. */
static int unit_power(char c) {
  static const char units[] = "KMGT";
  const char *p = c ? strchr(units, upper(c)) : NULL;
  return p ? (int)(p - units) + 1 : 0;
}

static int not_a_size(const char *text, ts_err *err) {
  return ts_err_set(err, TS_EINVAL,
                    "'%s' is not a size: expected bytes, optionally with a "
                    "K, M, G or T unit (e.g. 512, 64K, 1GiB, 1TB)",
                    text ? text : "");
}

int ts_size_parse(const char *text, uint64_t *out, ts_err *err) {
  if (!text || !is_digit(text[0])) return not_a_size(text, err);
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  const char *p = end;
  int power = unit_power(*p);
  if (power) {
    p++;
    if (*p == 'i') p++;
  }
  if (upper(*p) == 'B') p++;
  if (*p) return not_a_size(text, err);
  int shift = 10 * power;
  if (errno == ERANGE || (uint64_t)v > (UINT64_MAX >> shift))
    return ts_err_set(err, TS_EINVAL,
                      "'%s' is too large a size (at most 2^64 - 1 bytes)",
                      text);
  *out = (uint64_t)v << shift;
  return TS_OK;
}

int ts_integer_parse(const char *text, long long lo, long long hi,
                     long long *out, ts_err *err) {
  const char *digits = text && (text[0] == '-' || text[0] == '+') ? text + 1
                                                                  : text;
  char *end = NULL;
  long long v = 0;
  errno = 0;
  if (digits && is_digit(digits[0])) v = strtoll(text, &end, 10);
  if (!end || *end || errno == ERANGE || v < lo || v > hi) {
    if (hi == LLONG_MAX)
      return ts_err_set(err, TS_EINVAL, "'%s' is not an integer >= %lld",
                        text ? text : "", lo);
    return ts_err_set(err, TS_EINVAL,
                      "'%s' is not an integer in [%lld, %lld]",
                      text ? text : "", lo, hi);
  }
  *out = v;
  return TS_OK;
}

size_t ts_hostport_host_length(const char *address) {
  const char *colon = strrchr(address, ':');
  return colon ? (size_t)(colon - address) : strlen(address);
}
