/*
 * alloc_fail.c - the allocator wrappers of -Dalloc_fail=true (alloc_fail.h).
 *
 * GNU ld's --wrap=SYMBOL sends every reference to SYMBOL from the objects
 * of the link to __wrap_SYMBOL, and __real_SYMBOL to the real one; shared
 * libraries keep theirs. Each wrapper counts the call and asks
 * should_fail() whether this one is the armed one.
 *
 * Invariants:
 *  - The wrappers never allocate and never take a lock: they may run on any
 *    thread, inside gRPC's callbacks or a signal-free hot loop. State is a
 *    few atomics; `fail_at` is an absolute count (0: off).
 *  - The report of a failure (and its backtrace) is printed once per
 *    arming, with write(2) only; backtrace() is called once at start-up so
 *    that its lazy load of libgcc happens before any injection.
 *  - The one-shot control (call_begin / call_end) is serialised by
 *    control_mu; it never runs inside a wrapper.
 */
#include "alloc_fail.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The wrapped functions (return type, name, parameters): each has its
 * __real_ (the libc one, resolved by the linker) and its __wrap_ below. */
#define WRAPPED(X)                                              \
  X(void *, malloc, (size_t size))                              \
  X(void *, calloc, (size_t n, size_t size))                    \
  X(void *, realloc, (void *p, size_t size))                    \
  X(char *, strdup, (const char *s))                            \
  X(char *, strndup, (const char *s, size_t n))                 \
  X(int, posix_memalign, (void **p, size_t align, size_t size)) \
  X(void *, aligned_alloc, (size_t align, size_t size))

#define DECLARE(type, name, params) \
  type __real_##name params;        \
  type __wrap_##name params;
WRAPPED(DECLARE)
#undef DECLARE

static atomic_long count;    /* allocations so far */
static atomic_long fail_at;  /* the count that fails; 0: none */
static atomic_bool persist;  /* and every one after fail_at */
static atomic_bool fired;    /* some allocation failed since arming */
static atomic_bool reported; /* the failure of this arming was printed */

/* ---- reporting --------------------------------------------------------- */

/* Writes a whole string to stderr; nothing allocates. */
static void put(const char *s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t w = write(STDERR_FILENO, s, len);
    if (w <= 0) return;
    s += w;
    len -= (size_t)w;
  }
}

static void report(const char *what, size_t size, long n) {
  char line[160];
  snprintf(line, sizeof line,
           "alloc_fail: allocation #%ld (%s of %zu bytes) fails with ENOMEM; "
           "backtrace:\n",
           n, what, size);
  put(line);
  void *frames[32];
  int depth = backtrace(frames, 32);
  backtrace_symbols_fd(frames, depth, STDERR_FILENO);
}

/* ---- the decision ------------------------------------------------------ */

/* Counts one allocation; true (errno ENOMEM) when it is to fail. */
static bool should_fail(const char *what, size_t size) {
  long n = atomic_fetch_add_explicit(&count, 1, memory_order_relaxed) + 1;
  long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
  if (at == 0 || n < at) return false;
  if (n > at && !atomic_load_explicit(&persist, memory_order_relaxed))
    return false;
  atomic_store(&fired, true);
  if (!atomic_exchange(&reported, true)) report(what, size, n);
  errno = ENOMEM;
  return true;
}

long ts_alloc_fail_count(void) { return atomic_load(&count); }

void ts_alloc_fail_arm(long n, bool keep_failing) {
  atomic_store(&fail_at, 0);
  atomic_store(&fired, false);
  atomic_store(&reported, false);
  atomic_store(&persist, keep_failing);
  if (n > 0) atomic_store(&fail_at, atomic_load(&count) + n);
}

bool ts_alloc_fail_fired(void) { return atomic_load(&fired); }

/* ---- the wrappers ------------------------------------------------------ */

void *__wrap_malloc(size_t size) {
  return should_fail("malloc", size) ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size) {
  return should_fail("calloc", n * size) ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size) {
  return should_fail("realloc", size) ? NULL : __real_realloc(p, size);
}

char *__wrap_strdup(const char *s) {
  return should_fail("strdup", strlen(s) + 1) ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n) {
  return should_fail("strndup", strnlen(s, n) + 1) ? NULL
                                                    : __real_strndup(s, n);
}

int __wrap_posix_memalign(void **p, size_t align, size_t size) {
  if (should_fail("posix_memalign", size)) return ENOMEM;
  return __real_posix_memalign(p, align, size);
}

void *__wrap_aligned_alloc(size_t align, size_t size) {
  return should_fail("aligned_alloc", size) ? NULL
                                            : __real_aligned_alloc(align, size);
}

/* ---- the one-shot control of TESSERA_ALLOC_FAIL_CONTROL ---------------- */

static pthread_mutex_t control_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *control_dir;  /* getenv's string; NULL: no control */
static const void *armed_call;   /* under control_mu */
static char armed_method[64];    /* under control_mu */
static long armed_base;          /* count when armed_call began */
static long armed_n;             /* its N (0: only counting) */
static bool armed_persist;       /* "N+": every one from N on fails */

/* Reads "METHOD N" or "METHOD N+" from DIR/PID into method, *n and
 * *from_n_on; false if there is no file or it does not parse. */
static bool control_read(char *method, size_t size, long *n, bool *from_n_on) {
  char path[512], text[128];
  snprintf(path, sizeof path, "%s/%ld", control_dir, (long)getpid());
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t len = read(fd, text, sizeof text - 1);
  close(fd);
  if (len <= 0) return false;
  text[len] = '\0';
  char *space = strchr(text, ' ');
  if (!space || (size_t)(space - text) >= size) return false;
  memcpy(method, text, (size_t)(space - text));
  method[space - text] = '\0';
  char *end;
  *n = strtol(space + 1, &end, 10);
  *from_n_on = *end == '+';
  return end != space + 1 && *n >= 0 && !(*from_n_on && *n == 0);
}

static void control_remove(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/%ld", control_dir, (long)getpid());
  unlink(path);
}

/* Whether the method path ends in "/name". */
static bool method_is(const char *path, const char *name) {
  size_t lp = strlen(path), ln = strlen(name);
  return lp > ln && path[lp - ln - 1] == '/' &&
         strcmp(path + lp - ln, name) == 0;
}

bool ts_alloc_fail_call_begin(const char *method, const void *call) {
  if (!control_dir) return false;
  char name[sizeof armed_method];
  long n;
  bool persist_from_n;
  pthread_mutex_lock(&control_mu);
  bool armed = !armed_call &&
               control_read(name, sizeof name, &n, &persist_from_n) &&
               method_is(method, name);
  if (armed) {
    control_remove();
    armed_call = call;
    memcpy(armed_method, name, sizeof name);
    armed_base = ts_alloc_fail_count();
    armed_n = n;
    armed_persist = persist_from_n;
    ts_alloc_fail_arm(n, persist_from_n);
  }
  pthread_mutex_unlock(&control_mu);
  return armed;
}

void ts_alloc_fail_call_end(const void *call) {
  pthread_mutex_lock(&control_mu);
  if (call && call == armed_call) {
    bool failed = ts_alloc_fail_fired();
    ts_alloc_fail_arm(0, false);
    char line[160], which[32] = "none";
    if (failed)
      snprintf(which, sizeof which, "%ld%s", armed_n, armed_persist ? "+" : "");
    snprintf(line, sizeof line, "alloc_fail: %s made %ld allocations, failed %s\n",
             armed_method, ts_alloc_fail_count() - armed_base, which);
    put(line);
    armed_call = NULL;
  }
  pthread_mutex_unlock(&control_mu);
}

/* ---- start-up and exit ------------------------------------------------- */

static void print_count(void) {
  char line[64];
  snprintf(line, sizeof line, "alloc_fail: %ld allocations\n",
           ts_alloc_fail_count());
  put(line);
}

/* A positive integer from the environment, else 0. */
static long env_count(const char *name) {
  const char *v = getenv(name);
  if (!v || !*v) return 0;
  char *end;
  long n = strtol(v, &end, 10);
  return *end == '\0' && n > 0 ? n : 0;
}

__attribute__((constructor)) static void alloc_fail_init(void) {
  void *frame;
  backtrace(&frame, 1); /* loads libgcc now, not during a report */
  control_dir = getenv("TESSERA_ALLOC_FAIL_CONTROL");
  if (control_dir && !*control_dir) control_dir = NULL;
  if (env_count("TESSERA_ALLOC_COUNT")) atexit(print_count);
  long n = env_count("TESSERA_ALLOC_FAIL");
  if (n > 0) {
    atomic_store(&persist, env_count("TESSERA_ALLOC_FAIL_PERSIST") > 0);
    atomic_store(&fail_at, n); /* counted from the process's start */
  }
}
