/*
 * options.h - the text forms every Tessera binary reads from its command
 * line and config files: byte sizes, bounded integers and HOST:PORT
 * addresses. One grammar each, so that "--memory-limit 1GiB" means the same
 * to the worker, the coordinator and the client.
 *
 * Every parser takes the whole text: no leading or trailing blanks, no
 * trailing junk, no empty text. Each returns TS_OK or TS_EINVAL and, on
 * failure, fills err (when non-NULL) with a message that quotes the text
 * and says what was expected; the caller prefixes the option's name. Out
 * is written only on success. Depends on error.h only.
 */
#ifndef TS_OPTIONS_H
#define TS_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* A byte size: decimal digits, then optionally a unit.
 *
 *   size := digits [unit]
 *   unit := "B" | ("K" | "M" | "G" | "T") ["i"] ["B"]
 *
 * Units are powers of 1024 (K = Ki = 2^10 ... T = Ti = 2^40): every size
 * Tessera reads is a memory limit, and memory comes in binary units. The
 * letters K, M, G, T and B may be either case; the optional "i" is
 * lower-case only ("1GiB", "1gib", "64k", "512M", "1TB", "512B", "512").
 * A sign, a fraction ("1.5G") or an exponent is refused; so is a value
 * beyond UINT64_MAX, before or after the unit is applied. */
int ts_size_parse(const char *text, uint64_t *out, ts_err *err);

/* A decimal integer in [lo, hi], with an optional leading '-' or '+'.
 * Overflow of long long is refused like any value out of range. */
int ts_integer_parse(const char *text, long long lo, long long hi,
                     long long *out, ts_err *err);

/* The length of HOST in "HOST:PORT": everything before the last ':' (so
 * "[::]:0" keeps its brackets); the whole text when there is no ':'. */
size_t ts_hostport_host_length(const char *address);

/* Whether `address` is a worker address a coordinator may dial: exactly
 *
 *   address := host ":" port
 *   host    := name | ipv4 | "[" ipv6 "]"
 *   name    := labels of letters, digits and '-' joined by '.'
 *   port    := 1 .. 65535, decimal, no sign or leading zero
 *
 * so no URI scheme ("unix:/path", "dns:///h:1", "ipv4:..."), no path, no
 * blank or control character, nothing gRPC would read as a target other
 * than a TCP host and port. TS_EINVAL with a message quoting the address
 * escaped (ts_text_escape) and saying what was expected. At most
 * TS_ADDRESS_MAX - 1 bytes. */
#define TS_ADDRESS_MAX 256
int ts_address_check(const char *address, ts_err *err);

/* A comma-separated list of addresses, as --join and the client's --server
 * take them ("a:1,b:2"): split into items[0..*n), each copied (at most
 * TS_ADDRESS_MAX - 1 bytes). Refused with TS_EINVAL, quoting the text: an
 * empty list or item ("a:1,,b:2", a trailing comma), more than `max`
 * items, an item too long, or one listed twice (which would register or
 * send twice). Items are not checked as addresses: the caller applies its
 * own rule (ts_address_check, or a client's default port). */
int ts_address_list_split(const char *text, int max,
                          char items[][TS_ADDRESS_MAX], int *n, ts_err *err);

/* Copies at most `max_in` bytes of `in` into `out` (room for `size` > 0
 * bytes, always terminated) with every byte outside printable ASCII, and
 * the backslash, written as \xNN or \\: text from the network is shown in
 * logs and messages this way, so a newline in it cannot forge a log line.
 * Cut short (with "...") when `out` is too small. */
void ts_text_escape(const char *in, size_t max_in, char *out, size_t size);

#endif
