/*
 * log.h - leveled logging to stderr, one line per event:
 *   2026-11-21T07:40:01.123Z INFO  worker: loaded shard 3fa2.. (mlp/0) 1.2 MB
 * Thread-safe (one write(2) per line). The threshold comes from the
 * TESSERA_LOG env var (debug|info|warn|error); info by default.
 * gRPC's own log lines are routed here too (ts_rpc_init installs the hook).
 */
#ifndef TS_LOG_H
#define TS_LOG_H

typedef enum {
  TS_LOG_DEBUG = 0,
  TS_LOG_INFO = 1,
  TS_LOG_WARN = 2,
  TS_LOG_ERROR = 3,
} ts_log_level;

/* Sets the component name printed on every line ("worker", "coordinator"). */
void ts_log_set_component(const char *component);
/* Reads TESSERA_LOG; unknown values are ignored. */
void ts_log_init_from_env(void);
int ts_log_enabled(ts_log_level level);

void ts_log(ts_log_level level, const char *fmt, ...)
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

#endif
