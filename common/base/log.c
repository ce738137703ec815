/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static ts_log_level threshold = TS_LOG_INFO;
static const char *component_name = "tessera";

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void ts_log_set_component(const char *component) { component_name = component; }

void ts_log_init_from_env(void) {
  const char *v = getenv("TESSERA_LOG");
  if (!v) return;
  static const char *const names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(v, names[i]) == 0) threshold = (ts_log_level)i;
}

int ts_log_enabled(ts_log_level level) { return level >= threshold; }

void ts_log(ts_log_level level, const char *fmt, ...) {
  if (level < threshold) return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line,
                   "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s[%d]: ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                   level_names[level], component_name, (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t written = write(STDERR_FILENO, line, len);
  (void)written;
}
