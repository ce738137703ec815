/* log.c - see log.h. */
#include "log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static ts_log_level threshold = TS_LOG_INFO;
static const char *component_name = "tessera";
static atomic_int journal_format;

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
/* sd-daemon.h: SD_DEBUG 7, SD_INFO 6, SD_WARNING 4, SD_ERR 3. */
static const int level_priorities[] = {7, 6, 4, 3};

void ts_log_set_component(const char *component) { component_name = component; }

void ts_log_set_journal(int on) { atomic_store(&journal_format, on ? 1 : 0); }

int ts_log_priority(ts_log_level level) { return level_priorities[level]; }

/* JOURNAL_STREAM is "DEVICE:INODE" of the stream journald gave us. */
static int stderr_is_journal(void) {
  const char *v = getenv("JOURNAL_STREAM");
  if (!v || !*v) return 0;
  uintmax_t dev, ino;
  if (sscanf(v, "%ju:%ju", &dev, &ino) != 2) return 0;
  struct stat st;
  if (fstat(STDERR_FILENO, &st) != 0) return 0;
  return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

void ts_log_init_from_env(void) {
  ts_log_set_journal(stderr_is_journal());
  const char *v = getenv("TESSERA_LOG");
  if (!v) return;
  static const char *const names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(v, names[i]) == 0) threshold = (ts_log_level)i;
}

int ts_log_enabled(ts_log_level level) { return level >= threshold; }

size_t ts_log_format(char *buf, size_t cap, ts_log_level level, int journal,
                     const struct timespec *when, const char *component,
                     int pid, const char *fmt, va_list ap) {
  if (cap < 2) return 0;
  int n;
  if (journal) {
    n = snprintf(buf, cap, "<%d>%s %s: ", level_priorities[level],
                 level_names[level], component);
  } else {
    struct tm tm;
    gmtime_r(&when->tv_sec, &tm);
    n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s[%d]: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, when->tv_nsec / 1000000,
                 level_names[level], component, pid);
  }
  size_t len = n < 0 ? 0 : (size_t)n;
  if (len < cap - 1) {
    int m = vsnprintf(buf + len, cap - len - 1, fmt, ap);
    len += m < 0 ? 0 : (size_t)m;
  }
  if (len > cap - 2) len = cap - 2;
  buf[len++] = '\n';
  buf[len] = '\0';
  return len;
}

__attribute__((format(printf, 2, 0)))
static void emit(ts_log_level level, const char *fmt, va_list ap) {
  char line[2048];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  size_t len = ts_log_format(line, sizeof line, level,
                             atomic_load(&journal_format), &now,
                             component_name, (int)getpid(), fmt, ap);
  ssize_t written = write(STDERR_FILENO, line, len);
  (void)written;
}

void ts_log(ts_log_level level, const char *fmt, ...) {
  if (level < threshold) return;
  va_list ap;
  va_start(ap, fmt);
  emit(level, fmt, ap);
  va_end(ap);
}

/* Recent rate-limited lines, by a hash of their text (FNV-1a): collisions
 * only merge two lines' counts, which a log can afford. */
#define RECENT_LINES 32
static struct {
  uint64_t hash;
  time_t printed; /* CLOCK_MONOTONIC seconds */
  unsigned held;  /* lines not printed since */
} recent[RECENT_LINES];
static pthread_mutex_t recent_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t text_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Returns how many copies were held back (>= 0) if the line should print
 * now, or -1 to hold it. */
static long limit_check(const char *text) {
  struct timespec mono;
  clock_gettime(CLOCK_MONOTONIC, &mono);
  uint64_t h = text_hash(text);
  long held = -1;
  pthread_mutex_lock(&recent_mu);
  int slot = -1, oldest = 0;
  for (int i = 0; i < RECENT_LINES; i++) {
    if (recent[i].printed && recent[i].hash == h) slot = i;
    if (recent[i].printed < recent[oldest].printed) oldest = i;
  }
  if (slot < 0) {
    recent[oldest].hash = h;
    recent[oldest].printed = mono.tv_sec + 1; /* never 0: 0 marks free */
    recent[oldest].held = 0;
    held = 0;
  } else if (mono.tv_sec + 1 - recent[slot].printed >= TS_LOG_REPEAT_SECONDS) {
    held = (long)recent[slot].held;
    recent[slot].printed = mono.tv_sec + 1;
    recent[slot].held = 0;
  } else {
    recent[slot].held++;
  }
  pthread_mutex_unlock(&recent_mu);
  return held;
}

static void emit_text(ts_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emit_text(ts_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(level, fmt, ap);
  va_end(ap);
}

int ts_log_limited(ts_log_level level, const char *fmt, ...) {
  if (level < threshold) return 0;
  char text[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  long held = limit_check(text);
  if (held < 0) return 0;
  if (held > 0)
    emit_text(level, "%s (and %ld times more in the last %d s)", text, held,
              TS_LOG_REPEAT_SECONDS);
  else
    emit_text(level, "%s", text);
  return 1;
}
