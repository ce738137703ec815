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

int ts_address_list_split(const char *text, int max,
                          char items[][TS_ADDRESS_MAX], int *n, ts_err *err) {
  char shown[128];
  ts_text_escape(text ? text : "", 100, shown, sizeof shown);
  if (!text || !text[0])
    return ts_err_set(err, TS_EINVAL, "empty address list");
  int count = 0;
  for (const char *p = text;; p++) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == 0)
      return ts_err_set(err, TS_EINVAL, "address list '%s' has an empty "
                        "item", shown);
    if (count == max)
      return ts_err_set(err, TS_EINVAL, "address list '%s' has more than %d "
                        "items", shown, max);
    if (len >= TS_ADDRESS_MAX)
      return ts_err_set(err, TS_EINVAL, "address list '%s': an address is "
                        "longer than %d bytes", shown, TS_ADDRESS_MAX - 1);
    memcpy(items[count], p, len);
    items[count][len] = '\0';
    for (int i = 0; i < count; i++)
      if (strcmp(items[i], items[count]) == 0) {
        char item[128];
        ts_text_escape(items[count], len, item, sizeof item);
        return ts_err_set(err, TS_EINVAL, "address list '%s' names '%s' "
                          "twice", shown, item);
      }
    count++;
    if (!end) break;
    p = end;
  }
  *n = count;
  return TS_OK;
}

void ts_text_escape(const char *in, size_t max_in, char *out, size_t size) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < max_in && in[i]; i++) {
    unsigned char c = (unsigned char)in[i];
    char piece[5] = {(char)c, 0};
    if (c == '\\') {
      piece[1] = '\\';
    } else if (c < 0x20 || c >= 0x7f) {
      piece[0] = '\\';
      piece[1] = 'x';
      piece[2] = hex[c >> 4];
      piece[3] = hex[c & 15];
    }
    size_t n = strlen(piece);
    if (o + n > size - 1) { /* no room: end in "..." where it fits */
      if (size > 3) {
        o = o < size - 4 ? o : size - 4;
        memcpy(out + o, "...", 3);
        o += 3;
      }
      break;
    }
    memcpy(out + o, piece, n);
    o += n;
  }
  out[o] = '\0';
}

static int is_alnum(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A DNS name or dotted IPv4: labels of [A-Za-z0-9-], 1-63 bytes, not
 * starting or ending with '-', joined by single dots. */
static int is_host_name(const char *s, size_t n) {
  size_t label = 0;
  if (n == 0 || n > 253) return 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '.') {
      if (label == 0 || s[i - 1] == '-') return 0;
      label = 0;
    } else if (is_alnum(s[i]) || s[i] == '-') {
      if ((label == 0 && s[i] == '-') || ++label > 63) return 0;
    } else {
      return 0;
    }
  }
  return label > 0 && s[n - 1] != '-';
}

/* "[" hex digits, ':' and '.' (an embedded IPv4) "]", 2..45 inside. */
static int is_bracketed_ipv6(const char *s, size_t n) {
  if (n < 4 || s[0] != '[' || s[n - 1] != ']' || n - 2 > 45) return 0;
  int colons = 0;
  for (size_t i = 1; i + 1 < n; i++) {
    char c = s[i];
    if (c == ':') colons++;
    else if (!(is_digit(c) || (c >= 'a' && c <= 'f') ||
               (c >= 'A' && c <= 'F') || c == '.'))
      return 0;
  }
  return colons >= 2;
}

int ts_address_check(const char *address, ts_err *err) {
  const char *a = address ? address : "";
  size_t len = strnlen(a, TS_ADDRESS_MAX);
  const char *colon = len < TS_ADDRESS_MAX ? strrchr(a, ':') : NULL;
  int ok = colon != NULL;
  if (ok) {
    size_t host = (size_t)(colon - a);
    const char *port = colon + 1;
    long long v = 0;
    ok = (is_host_name(a, host) || is_bracketed_ipv6(a, host)) &&
         port[0] >= '1' && port[0] <= '9' && strlen(port) <= 5;
    for (const char *p = port; ok && *p; p++) {
      ok = is_digit(*p);
      v = v * 10 + (*p - '0');
    }
    ok = ok && v >= 1 && v <= 65535;
  }
  if (ok) return TS_OK;
  char shown[TS_ADDRESS_MAX];
  ts_text_escape(a, 64, shown, sizeof shown);
  return ts_err_set(err, TS_EINVAL,
                    "address '%s' is not HOST:PORT (a host name, an IPv4 "
                    "address or a [bracketed] IPv6 address, and a port "
                    "1-65535; no scheme such as unix:, no control "
                    "characters, under %d bytes)", shown, TS_ADDRESS_MAX);
}
