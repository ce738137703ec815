/*
 * alloc_fail.h - allocation-failure injection (SQLite's habit), for tests.
 *
 * Built only with `meson setup -Dalloc_fail=true` (TS_ALLOC_FAIL is 1 in
 * ts_config.h). The build links every program with GNU ld's
 * --wrap=malloc,calloc,realloc,strdup,strndup,aligned_alloc, so Tessera's
 * own object files call the __wrap_* functions of alloc_fail.c, which count
 * each call and may answer NULL (errno ENOMEM). References from the shared
 * libraries (gRPC, protobuf-c, OpenBLAS, libuv, glibc itself) are not
 * rewritten: they keep the real allocator. gRPC aborts on an allocation
 * failure by design; only our code must survive one. protobuf-c's own
 * allocations (unpack and pack with the NULL allocator) happen inside
 * libprotobuf-c.so and are therefore not injected; messages unpacked into a
 * request arena (rpc_message.h) are, since the arena's blocks come from our
 * malloc. mmap-backed memory is out of scope.
 *
 * Controls, read from the environment once at start-up:
 *   TESSERA_ALLOC_FAIL=N          the N-th allocation of the process fails
 *   TESSERA_ALLOC_FAIL_PERSIST=1  ...and every one after it too
 *   TESSERA_ALLOC_COUNT=1         print the process's count at exit
 *   TESSERA_ALLOC_FAIL_CONTROL=DIR
 *       one-shot injection into one call of a daemon: a file DIR/PID
 *       (PID the daemon's) holding "METHOD N" arms the next accepted call
 *       whose method path ends in "/METHOD": the N-th allocation counting
 *       from that call's start fails (N = 0: fail none, only count);
 *       "METHOD N+" fails every allocation from the N-th until the call
 *       is answered. The file is removed when the call takes it; when the
 *       call is answered the daemon prints one line on stderr,
 *         alloc_fail: METHOD made K allocations, failed N|N+|none
 *       and injection is off again. Counting is process-wide: allocations
 *       of other threads during the call count too.
 * A failure prints, once per arming, which allocation failed and a
 * backtrace (backtrace_symbols_fd) on stderr.
 *
 * Without the option every function here is an inline no-op, so callers
 * need no #if.
 */
#ifndef TS_ALLOC_FAIL_H
#define TS_ALLOC_FAIL_H

#include <stdbool.h>
#include <stddef.h>

#include "ts_config.h"

#if TS_ALLOC_FAIL

/* Allocations counted since the process started. */
long ts_alloc_fail_count(void);
/* Arms injection: the n-th allocation from now fails (n >= 1); with
 * `persist` every one after it fails too. n = 0 disarms. */
void ts_alloc_fail_arm(long n, bool persist);
/* Whether some allocation failed since the last arming. */
bool ts_alloc_fail_fired(void);

/* The one-shot control of TESSERA_ALLOC_FAIL_CONTROL, called by the RPC
 * server: call_begin when a call of `method` (its path) is accepted returns
 * true when it armed injection for `call` (an opaque key); call_end with
 * the same key reports and disarms. Only one call is armed at a time. */
bool ts_alloc_fail_call_begin(const char *method, const void *call);
void ts_alloc_fail_call_end(const void *call);

#else

static inline long ts_alloc_fail_count(void) { return 0; }
static inline void ts_alloc_fail_arm(long n, bool persist) {
  (void)n;
  (void)persist;
}
static inline bool ts_alloc_fail_fired(void) { return false; }
static inline bool ts_alloc_fail_call_begin(const char *method,
                                            const void *call) {
  (void)method;
  (void)call;
  return false;
}
static inline void ts_alloc_fail_call_end(const void *call) { (void)call; }

#endif

#endif
