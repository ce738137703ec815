/*
 * log.h - leveled logging to stderr, one line per event:
 *   2026-11-21T07:40:01.123Z INFO  worker[812]: loaded shard 3fa2.. (mlp/0)
 * Thread-safe (one write(2) per line). The threshold comes from the
 * TESSERA_LOG env var (debug|info|warn|error); info by default.
 * gRPC's own log lines are routed here too (ts_rpc_init installs the hook).
 *
 * Under systemd-journald (JOURNAL_STREAM names our stderr) a line starts
 * with the syslog priority instead of a timestamp, as sd-daemon(3) defines
 * the prefixes (SD_ERR "<3>", SD_WARNING "<4>", SD_INFO "<6>", SD_DEBUG
 * "<7>"):
 *   <4>WARN  coordinator: model mlp is unavailable for now: ...
 * so that `journalctl -p warning` selects our warnings and the journal's
 * own timestamp is the only one.
 */
#ifndef TS_LOG_H
#define TS_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <time.h>

typedef enum {
  TS_LOG_DEBUG = 0,
  TS_LOG_INFO = 1,
  TS_LOG_WARN = 2,
  TS_LOG_ERROR = 3,
} ts_log_level;

/* Seconds an identical rate-limited line stays quiet (ts_log_limited). */
#define TS_LOG_REPEAT_SECONDS 30

/* Sets the component name printed on every line ("worker", "coordinator"). */
void ts_log_set_component(const char *component);
/* Reads TESSERA_LOG; unknown values are ignored. Also decides the journal
 * format: on when JOURNAL_STREAM's "device:inode" is stderr's, as
 * systemd.exec(5) says to check (a child that inherited the variable but
 * writes elsewhere keeps timestamps). */
void ts_log_init_from_env(void);
int ts_log_enabled(ts_log_level level);
/* Forces the journal format on (1) or off (0); for tests and callers that
 * know better than the environment. */
void ts_log_set_journal(int on);

/* Syslog priority of a level (3 error, 4 warning, 6 info, 7 debug). */
int ts_log_priority(ts_log_level level);

/*
 * Formats one line, newline included, into buf (cap bytes; the line is cut
 * to fit, keeping the newline) and returns its length. journal selects the
 * "<N>" prefix without timestamp and pid; otherwise `when` (UTC) and pid
 * are printed. The pure part of ts_log, exposed so tests check it.
 */
size_t ts_log_format(char *buf, size_t cap, ts_log_level level, int journal,
                     const struct timespec *when, const char *component,
                     int pid, const char *fmt, va_list ap)
    __attribute__((format(printf, 8, 0)));

void ts_log(ts_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Like ts_log, for lines that repeat while a condition lasts ("model mlp is
 * unavailable for now" each time a worker joins): a line whose text equals
 * one printed less than TS_LOG_REPEAT_SECONDS ago is counted, not printed;
 * the next time it prints it says how many were held back. Lines that
 * differ (another model) are limited separately; a small table remembers
 * the recent ones, the oldest replaced first. Returns 1 if printed.
 */
int ts_log_limited(ts_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Debug lines are the chatty ones: their arguments are evaluated only when
 * debug logging is on. */
#define ts_log_debug(...)                                                   \
  do {                                                                      \
    if (ts_log_enabled(TS_LOG_DEBUG)) ts_log(TS_LOG_DEBUG, __VA_ARGS__);    \
  } while (0)
#define ts_log_info(...) ts_log(TS_LOG_INFO, __VA_ARGS__)
#define ts_log_warn(...) ts_log(TS_LOG_WARN, __VA_ARGS__)
#define ts_log_error(...) ts_log(TS_LOG_ERROR, __VA_ARGS__)
/* A warning that repeats while a condition lasts; see ts_log_limited. */
#define ts_log_warn_limited(...) ts_log_limited(TS_LOG_WARN, __VA_ARGS__)

#endif
